"""`arkq bench`: how much the queue adds to streaming straight from the model server, measured.

Every figure comes with a baseline measured in the same run on the same machine (streaming directly
from the same emulator, a bare Redis pub/sub hop, an idle worker), so results from a shared or small
machine still say something. `bench/RESULTS.md` holds a run's figures, the machine and the date.
"""
