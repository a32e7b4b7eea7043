"""Write the boundary file forcing.dat: 365 daily values (K/day) of a small seasonal cycle,
raw little-endian float64 (what heat.F90 reads by its relative name)."""
import math
import struct
import sys

days = range(365)
values = [0.05 * math.sin(2 * math.pi * d / 365) for d in days]
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack(f"<{len(values)}d", *values))
