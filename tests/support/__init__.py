"""Helpers shared by tests/, bench/ and scripts/, one module per purpose.

- ports: a free TCP port on 127.0.0.1
- waiting: poll a condition; poll a server's health service until SERVING
- procs: what /proc says about a process (children, command line, CPU time, memory, training workers)
- server_process: `tunewire-server` as a child process (start, wait until SERVING, stop, its log)
- server_thread: a TunewireServer in this process, on its own event loop (tests)
- specs: the benchmark job specs
- disk: a small tmpfs to fill, and the filler (disk-full tests)
- postgres: a real PostgreSQL server in a temporary folder (start, restart, fresh databases and schemas)
- replicas: several `tunewire-server` replicas sharing one PostgreSQL and one data folder (Replica, Cluster)

Nothing here imports torch: the benchmark drivers and demo scripts stay light.
"""
