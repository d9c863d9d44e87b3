"""Uploaded datasets: uploads in progress (uploads.py), the validation report of a file (report.py), the
catalogue of stored datasets (catalog.py), and where their files live and what names they take (layout.py).

No grpc here: the servicer converts messages (api/datasets.py) and calls these. Metadata goes through the
Store; the bytes are files under the upload dir, never held whole in memory.
"""
