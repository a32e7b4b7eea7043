"""The core: the TAMS rules, keyed randomness, the ensemble state machine and statistics.

Nothing in this package does I/O, starts a process or imports h5py or Parsl: it takes numbers
(scores, segment results) and returns decisions, segment requests and events, so every rule
can be tested with plain numbers and the same code drives `tams run` and the tests.
"""
