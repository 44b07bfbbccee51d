# Plans, subscriptions, rollups and statements live here once billing is built.
