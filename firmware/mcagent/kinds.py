"""The record kinds: which code stands for which kind, and which module owns it.

A record on flash starts with its kind code (1 byte); everything else about a kind lives in its module:
how its data is checked and encoded into a record (`encode`), decoded (`decode`), grouped into exchange
items (`key`, `group`) and written into a payload (`element`). The store keeps segments, cursor and
capacity and counts records per kind by the names below (dropped_<name>, quarantined_<name>,
pending_<name>; the uploader's summary says <name>_sent); the composer loops over whatever kinds the
pending records have. Adding a kind: its module and one entry in each tuple here (the next code).

A kind module: encode(store, *args) -> payload size (checks first: StoreError before anything is written;
the payload goes after the timestamp into storewrite.buffer(store, n); it may live in a module of its
own, ENCODERS); decode(rec); key(rec): records of
one kind with equal keys share an exchange item; a key equal to the record's position (rec.seq, rec.off)
makes an item of that record alone; group(rec) -> (meta JSON, payload content type or None for a JSON
array, path of a file the payload streams from or None, its size), or None when that file vanished;
element(put, rec): the record's part of the payload (for items without a file). RISING = True: the
records' timestamps rise strictly within a batch.

Kind modules are loaded when a record of theirs is written or sent (compat.load) and released with the
append side (Store.release_writer) and the composer (Agent.release).
"""

from mcagent import compat

# code = index + 1 (the byte in each record's header: never reorder, only append)
NAMES = ("readings", "events", "files", "custom")
MODULES = ("mcagent.kind_sample", "mcagent.kind_event", "mcagent.kind_file", "mcagent.kind_custom")
# The module whose encode() appends a record of each kind: the kind's own, or its append half where the
# composer, in every flush's heap, should not carry the encoder (samples: the common record).
ENCODERS = ("mcagent.kind_sample_write", "mcagent.kind_event", "mcagent.kind_file", "mcagent.kind_custom")


def module(code, cache):
    """The module of kind code, from cache (a list by code - 1, as long as its holder lives) or loaded: a
    record at a time must not look a module up by name."""
    mod = cache[code - 1]
    if mod is None:
        mod = cache[code - 1] = compat.load(MODULES[code - 1])
    return mod


def encoder(code, cache):
    """The module with the encode() of kind code (ENCODERS), from cache or loaded, as module() does."""
    mod = cache[code - 1]
    if mod is None:
        mod = cache[code - 1] = compat.load(ENCODERS[code - 1])
    return mod
