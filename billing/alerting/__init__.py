"""Alert rules: which apply to a customer, when they fire, and where they are checked.

`rules` contains the conditions and raises one Alert per rule, customer and
billing period. `realtime` checks them as each API message is recorded,
from running totals kept in memory. `periodic` checks every rule from the
rollup tables on a schedule.
"""
