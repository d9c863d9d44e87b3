"""Structure-aware fuzzing of tunewire's requests, driven by the protobuf descriptors.

Every field of every request message (new fields included, with no change here) is a `Slot`: a path from the
request down to one scalar, enum, string, repeated field or Struct. A `Mutation` puts one extreme value into one
slot of a valid request; `expectation` says which answers that mutation deserves where it is determinable
(a non-finite number, an out-of-range enum, a too-long string, a NUL in a name: INVALID_ARGUMENT naming the
field; a harmless in-range value: OK), and `check` holds every answer to the properties all answers share.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import grpc
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from hypothesis import strategies as st

from tunewire.v1 import tuning_service_pb2 as pb

FD = FieldDescriptor
STRUCT = "google.protobuf.Struct"
LEAF_MESSAGES = {STRUCT, "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Timestamp"}
MANY = 10_000  # repeated fields get this many elements
LONG = (1025, 100_000, 1 << 20, 5 << 20)  # string lengths; from 1 MiB on a string is refused
TOO_LONG = 1 << 20
MAX_MESSAGE = 1024  # bytes in a status message
MAX_TRAILERS = 16 * 1024  # bytes in all trailing metadata together
DELIBERATE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
              grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED}
SURROGATE = "\x7f\x7e\x7f"  # stands in for a lone surrogate, which protobuf will not serialize
SURROGATE_BYTES = b"\xed\xa0\x80"  # the same length on the wire: U+D800 as CESU-8, invalid UTF-8
# String fields that name something (ids, paths, columns, modules): a NUL in them is refused.
NAME_FIELDS = {"request_id", "display_name", "base_model", "path", "name", "config", "split", "lr_scheduler_type",
               "text_field", "text_pair_field", "label_field", "prompt_field", "completion_field", "messages_field",
               "chat_template_source", "target_modules", "page_token", "job_id", "dataset_id", "upload_id",
               "label_column"}
JOB_ID = "job_id"  # an unknown job id may be NOT_FOUND instead of INVALID_ARGUMENT


@dataclass(frozen=True)
class Slot:
    """One field reached from a request. `steps` are (field name, index or None); `present` says every
    message on the way is already set in the base request, so the mutation switches no oneof and adds no
    sub-message (the answer then depends on the mutated field alone)."""

    steps: tuple[tuple[str, int | None], ...]
    field: FieldDescriptor = field(compare=False)
    present: bool = True

    @property
    def path(self) -> str:
        return ".".join(name + (f"[{i}]" if i is not None else "") for name, i in self.steps)

    @property
    def name(self) -> str:
        return self.field.name


def slots(base: Message) -> list[Slot]:
    """Every leaf field of `base`'s type, walked through the descriptors (sub-messages, oneof branches,
    repeated messages at index 0)."""
    out: list[Slot] = []
    _walk(base.DESCRIPTOR, base, (), True, out, 0)
    return out


def _walk(desc: Descriptor, msg: Message | None, prefix, present: bool, out: list[Slot], depth: int) -> None:
    for fd in desc.fields:
        here = present
        if fd.containing_oneof is not None and msg is not None:
            here = here and msg.WhichOneof(fd.containing_oneof.name) in (None, fd.name)
        if fd.type != FD.TYPE_MESSAGE or fd.message_type.full_name in LEAF_MESSAGES or depth > 8:
            out.append(Slot(prefix + ((fd.name, None),), fd, here))
            continue
        if fd.is_repeated:
            if fd.message_type.GetOptions().map_entry:
                out.append(Slot(prefix + ((fd.name, None),), fd, here))
                continue
            out.append(Slot(prefix + ((fd.name, None),), fd, here))  # the list itself: MANY elements
            child = getattr(msg, fd.name)[0] if msg is not None and len(getattr(msg, fd.name)) else None
            _walk(fd.message_type, child, prefix + ((fd.name, 0),), here and child is not None, out, depth + 1)
        else:
            child = getattr(msg, fd.name) if msg is not None and msg.HasField(fd.name) else None
            _walk(fd.message_type, child, prefix + ((fd.name, None),), here and child is not None, out, depth + 1)


# --- values ---------------------------------------------------------------------------------------------

INT_RANGES = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1), FD.TYPE_SINT32: (-(2**31), 2**31 - 1), FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1), FD.TYPE_SINT64: (-(2**63), 2**63 - 1), FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1), FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}
NONFINITE = (math.nan, math.inf, -math.inf)
EXTREME_FLOATS = (1e300, -1e300, 1e-300, -1e-300, 5e-324, 1.7976931348623157e308, -0.0, 2e6, 1e30, -1.0)


def _ints(lo: int, hi: int):
    edges = sorted({v for v in (lo, lo + 1, -1, 0, 1, 2, hi - 1, hi, 2**31 - 1, 2**31, 2**32 - 1, 2**53 + 1,
                                2**63 - 1) if lo <= v <= hi})
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def _strings():
    return st.one_of(
        st.sampled_from(["", " ", "\x00", "a\x00b", "../../etc/passwd", "%2e%2e/x", "\u202e", "\ufeff", SURROGATE,
                         "a" + SURROGATE + "b"]),
        st.builds(lambda n, c: c * n, st.sampled_from(LONG), st.sampled_from(["a", "\x00", "é", "\U0001f600"])),
        st.text(max_size=64),
    )


def _struct_values():
    return st.one_of(st.sampled_from(NONFINITE + EXTREME_FLOATS + (0.0, 1.0, 999999999.0, 2.0**63)),
                     st.floats(), st.booleans(), st.none(), st.sampled_from(["", "999999999", "x" * 100_000]))


def deep(depth: int, leaf) -> dict:
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def rows():
    """Inline training rows: one row made extreme, or very many plain rows."""
    extreme = st.one_of(_struct_values(), st.integers(1, 300).map(lambda d: deep(d, 1.0)),
                        st.just([1.0] * MANY), st.just("t" * (1 << 20)))
    one = st.builds(lambda key, value: ("row", key, value), st.sampled_from(["label", "text", "other"]), extreme)
    many = st.just(("many", None, None))
    return st.one_of(one, many)


@dataclass(frozen=True)
class Mutation:
    slot: Slot
    kind: str  # nonfinite | enum_out_of_range | too_long | nul | surrogate | harmless | extreme
    value: object

    def describe(self) -> str:
        v = self.value
        if isinstance(v, str):
            v = f"str(len={len(v)}, head={v[:12]!r})"
        elif isinstance(v, list):
            v = f"list(len={len(v)}, head={v[:1]!r})"[:80]
        elif isinstance(v, tuple):
            v = repr(v)[:80]
        return f"{self.slot.path} <- {self.kind}: {v}"


def _kind_of(slot: Slot, value) -> str:
    fd = slot.field
    if isinstance(value, float) and not math.isfinite(value):
        return "nonfinite"
    if fd.type == FD.TYPE_ENUM and isinstance(value, int) and value not in fd.enum_type.values_by_number:
        return "enum_out_of_range"
    if isinstance(value, str):
        if SURROGATE in value:
            return "surrogate"
        if len(value) >= TOO_LONG:
            return "too_long"
        if "\x00" in value:
            return "nul"
    return "extreme"


def mutations(base: Message, harmless: dict[str, st.SearchStrategy] | None = None, focus: tuple[str, ...] = ()):
    """One mutation of one slot of `base`: an extreme value for its type, or (for paths in `harmless`) an
    in-range value that must be accepted. Slots under a `focus` prefix get half of the examples."""
    harmless = harmless or {}
    all_slots = slots(base)

    def for_slot(slot: Slot):
        fd = slot.field
        options = []
        if slot.path in harmless:
            options.append(harmless[slot.path].map(lambda v: Mutation(slot, "harmless", v)))
        if fd.type == FD.TYPE_MESSAGE and fd.message_type.full_name == STRUCT:
            options.append(rows().map(lambda v: Mutation(slot, "rows", v)))
        elif _is_map(fd):  # MANY entries, or one entry with an extreme key or value
            key, value = fd.message_type.fields_by_name["key"], fd.message_type.fields_by_name["value"]
            options.append(st.just(Mutation(slot, "extreme", ("many",))))
            options.append(st.tuples(_values(key), _values(value)).map(
                lambda kv: Mutation(slot, _kind_of(slot, kv[0]), ("entry", kv[0], kv[1]))))
        elif fd.type == FD.TYPE_MESSAGE and fd.is_repeated:
            options.append(st.just(Mutation(slot, "extreme", ("many",))))
        elif fd.type == FD.TYPE_MESSAGE:
            return st.one_of(options) if options else st.nothing()
        else:
            values = _values(fd)
            if fd.is_repeated:
                single = values.map(lambda v: [v])
                values = st.one_of(single, values.map(lambda v: [v] * MANY if not isinstance(v, str) or len(v) < 100
                                                      else [v]))
                options.append(values.map(lambda v: Mutation(slot, _kind_of(slot, v[0]) if len(v) == 1 else "extreme",
                                                             v)))
            else:
                options.append(values.map(lambda v: Mutation(slot, _kind_of(slot, v), v)))
        return st.one_of(options)

    usable = [s for s in all_slots if not (s.field.type == FD.TYPE_MESSAGE and s.field.message_type.full_name
                                           not in LEAF_MESSAGES and not s.field.is_repeated)]
    focused = [s for s in usable if focus and s.path.startswith(focus)]
    chosen = st.one_of(st.sampled_from(usable), st.sampled_from(focused)) if focused else st.sampled_from(usable)
    return chosen.flatmap(for_slot)


def _is_map(fd: FieldDescriptor) -> bool:
    return fd.type == FD.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry


def _values(fd: FieldDescriptor):
    if fd.type in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return st.one_of(st.sampled_from(NONFINITE), st.sampled_from(EXTREME_FLOATS),
                         st.floats(width=64 if fd.type == FD.TYPE_DOUBLE else 32))
    if fd.type in INT_RANGES:
        return _ints(*INT_RANGES[fd.type])
    if fd.type == FD.TYPE_BOOL:
        return st.booleans()
    if fd.type == FD.TYPE_ENUM:
        top = max(fd.enum_type.values_by_number)
        return st.one_of(st.sampled_from(sorted(fd.enum_type.values_by_number)),
                         st.sampled_from([top + 1, 99, -1, -5, 2**31 - 1, -(2**31)]))
    if fd.type == FD.TYPE_STRING:
        return _strings()
    if fd.type == FD.TYPE_BYTES:
        return st.binary(max_size=64)
    raise AssertionError(f"no values for {fd.full_name}")


# --- applying a mutation -----------------------------------------------------------------------------------


def apply(base: Message, mutation: Mutation) -> bytes:
    """The serialized request: `base` with the mutation applied (a lone surrogate spliced into the bytes)."""
    msg = type(base)()
    msg.CopyFrom(base)
    target = msg
    for name, index in mutation.slot.steps[:-1]:
        child = getattr(target, name)
        if index is not None:
            if not len(child):
                child.add()
            child = child[index]
        target = child
    fd, value = mutation.slot.field, mutation.value
    name = fd.name
    if fd.type == FD.TYPE_MESSAGE and fd.message_type.full_name == STRUCT:
        _apply_rows(target, fd, value)
    elif _is_map(fd):  # a map of scalars: MANY distinct keys, or the one entry
        container = getattr(target, name)
        container.clear()
        if value[0] == "many":
            default = fd.message_type.fields_by_name["value"].default_value
            container.update({f"k{i}": default for i in range(MANY)})
        else:
            container[value[1]] = value[2]
    elif fd.type == FD.TYPE_MESSAGE:  # a repeated message: MANY default elements
        container = getattr(target, name)
        del container[:]
        for _ in range(MANY):
            container.add()
    elif fd.is_repeated:
        container = getattr(target, name)
        del container[:]
        container.extend(value)
    else:
        setattr(target, name, value)
    data = msg.SerializeToString()
    if mutation.kind == "surrogate" or (isinstance(value, list) and value and isinstance(value[0], str)
                                        and SURROGATE in value[0]):
        data = data.replace(SURROGATE.encode(), SURROGATE_BYTES)
    return data


def _apply_rows(target: Message, fd: FieldDescriptor, value) -> None:
    what, key, extreme = value
    container = getattr(target, fd.name)
    if not fd.is_repeated:  # a single Struct
        container.Clear()
        container.update({"k": extreme} if what == "row" else {str(i): i for i in range(MANY)})
        return
    template = dict(container[0]) if len(container) else {"text": "good", "label": 1}
    if what == "many":
        del container[:]
        for i in range(MANY):
            container.add().update({**template, "label": i % 2})
        return
    if not len(container):
        container.add()
    row = container[0]
    row.Clear()
    row.update({**template, key: extreme})


# --- answers ------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    code: grpc.StatusCode
    message: str = ""
    trailers: tuple = ()
    response: Message | None = None

    @property
    def trailer_bytes(self) -> int:
        return sum(len(k) + len(v if isinstance(v, bytes) else v.encode()) for k, v in self.trailers)

    @property
    def violations(self) -> list[str]:
        for key, value in self.trailers:
            if key == "grpc-status-details-bin":
                status = status_pb2.Status.FromString(value)
                out = []
                for detail in status.details:
                    bad = error_details_pb2.BadRequest()
                    if detail.Unpack(bad):
                        out += [v.field for v in bad.field_violations]
                return out
        return []


def _norm(path: str) -> str:
    return re.sub(r"\[\d+\]", "", path)


def names(answer: Answer, path: str, unparsable: bool = False) -> bool:
    """Some field violation names `path` (or a field above or below it); for bytes that do not parse, the
    whole request may be named instead."""
    want = _norm(path)
    for got in map(_norm, answer.violations):
        if got and (got == want or want.startswith(got + ".") or got.startswith(want + ".")
                    or (unparsable and got == "request")):
            return True
    return False


@dataclass(frozen=True)
class Expectation:
    codes: frozenset
    named: bool  # an INVALID_ARGUMENT must name the mutated field


def expectation(mutation: Mutation, field_prefix: str, determinable: bool) -> Expectation | None:
    """The answer `mutation` deserves, or None where only the shared properties can be asserted.

    field_prefix: the part of the slot path the server leaves out of violation names ("spec.").
    determinable: the base request is one whose answer depends on this field alone (a SUCCEEDED job for
    Predict; Predict on a classifier ignores generation settings, so those are not determinable there).
    """
    slot, kind = mutation.slot, mutation.kind
    invalid = frozenset({grpc.StatusCode.INVALID_ARGUMENT})
    if kind == "surrogate":  # invalid UTF-8 never parses: refused whatever the field
        return Expectation(invalid, True)
    if not (slot.present and determinable):
        return None
    if kind == "harmless":
        ok = {grpc.StatusCode.OK}
        if slot.name == "request_id":  # the same key may have come with the other base spec before
            ok.add(grpc.StatusCode.ALREADY_EXISTS)
        return Expectation(frozenset(ok), False)
    if kind in ("nonfinite", "enum_out_of_range") or kind == "too_long" or \
            (kind == "nul" and slot.name in NAME_FIELDS):
        if slot.name == JOB_ID:
            return Expectation(frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}), True)
        return Expectation(invalid, True)
    if kind == "rows" and _bad_row_value(mutation.value):
        return Expectation(invalid, True)
    return None


def _bad_row_value(value) -> bool:
    """An inline row value no dataset may hold: a non-finite number, or a label no class index can be."""
    what, key, extreme = value
    if what != "row":
        return False
    if isinstance(extreme, float) and not math.isfinite(extreme):
        return True
    return key == "label" and isinstance(extreme, float) and (extreme < 0 or extreme >= 10_000
                                                               or extreme != int(extreme))


def check(answer: Answer, mutation: Mutation, expected: Expectation | None, field_prefix: str) -> list[str]:
    """What is wrong with `answer`; empty when every property holds."""
    problems = []
    allowed = set(DELIBERATE)
    if mutation.slot.name == "request_id":
        allowed.add(grpc.StatusCode.ALREADY_EXISTS)
    if answer.code not in allowed:
        problems.append(f"status {answer.code.name}")
    if len(answer.message.encode("utf-8", "replace")) >= MAX_MESSAGE:
        problems.append(f"message of {len(answer.message.encode('utf-8', 'replace'))} bytes")
    if answer.trailer_bytes >= MAX_TRAILERS:
        problems.append(f"trailing metadata of {answer.trailer_bytes} bytes")
    if expected is not None:
        if answer.code not in expected.codes:
            problems.append(f"expected {'/'.join(sorted(c.name for c in expected.codes))}, got {answer.code.name}")
        elif answer.code == grpc.StatusCode.INVALID_ARGUMENT and expected.named:
            path = mutation.slot.path.removeprefix(field_prefix)
            if not names(answer, path, unparsable=mutation.kind == "surrogate"):
                problems.append(f"INVALID_ARGUMENT does not name {path} (names {answer.violations[:5]})")
    return problems


def request_types() -> dict[str, type[Message]]:
    """The request message of every TuningService method."""
    service = pb.DESCRIPTOR.services_by_name["TuningService"]
    return {m.name: getattr(pb, m.input_type.name) for m in service.methods}


def response_types() -> dict[str, type[Message]]:
    service = pb.DESCRIPTOR.services_by_name["TuningService"]
    return {m.name: getattr(pb, m.output_type.name) for m in service.methods}
