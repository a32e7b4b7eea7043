"""The runtime: the driver loop, the retry policy, the executors (Parsl and in-process) and the
code that runs inside a worker."""
