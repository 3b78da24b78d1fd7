"""The run store's schema, as SQL text, versioned with PRAGMA user_version (docs/store-layout.md).

Version 3 (DDL) keeps the numbers of each statistic as binary segments (store/segments.py) and
the statistic names once, in `stats`. Versions 1 and 2 (DDL_V1, and v2's `role` column) kept one
row per value; they are still read (store/legacy.py) and `migrate` rewrites them as version 3.
"""

APPLICATION_ID = 0x47444F43  # "GDOC": marks an SQLite file as a graddoctor store
SCHEMA_VERSION = 3
LEGACY_VERSIONS = (1, 2)  # one row per value: read as they are, written as they are

# The tables versions 1 and 3 share, then each version's own; DDL_V1 and DDL are composed from them.
_RUNS = """\
CREATE TABLE IF NOT EXISTS runs (
    run_id      INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,            -- running | finished | failed ('crashed' is derived)
    created     REAL NOT NULL,            -- unix time
    updated     REAL NOT NULL,            -- unix time of the last flush (a heartbeat)
    pid         INTEGER,                  -- writer process, to tell 'running' from 'crashed'
    host        TEXT,
    config_json TEXT NOT NULL,            -- watch options and the user's own config
    env_json    TEXT NOT NULL,            -- python/torch versions, device, model class
    error       TEXT,                     -- the exception that ended a failed run
    first_nonfinite_json TEXT,            -- {"step", "layer", "stat"} of the first NaN/Inf recorded
    next_step   INTEGER NOT NULL DEFAULT 0  -- optimizer steps taken (recorded or not) as of the last flush
);
CREATE INDEX IF NOT EXISTS runs_by_name ON runs(name);
"""

_LAYERS = """\
CREATE TABLE IF NOT EXISTS layers (
    run_id   INTEGER NOT NULL REFERENCES runs(run_id),
    position INTEGER NOT NULL,            -- forward order, input side first
    layer    TEXT NOT NULL,               -- qualified module name ('' is the root module)
    type     TEXT NOT NULL,               -- module class name
    kind     TEXT NOT NULL,               -- 'param' (owns trainable parameters) or 'activation'
    n_params INTEGER NOT NULL,            -- trainable parameters owned directly (tied: counted once)
    param_shapes TEXT NOT NULL DEFAULT '[]', -- JSON {name: shape} of those parameters ('weight': [out, in])
{role}    PRIMARY KEY (run_id, position)
);
"""  # {role}: v2 and v3 add the role column
_ROLE = "    role     TEXT NOT NULL DEFAULT 'other', -- weight, norm, activation, embedding, recurrent, other\n"

_STEPS = """\
CREATE TABLE IF NOT EXISTS steps (
    run_id    INTEGER NOT NULL,
    step      INTEGER NOT NULL,           -- optimizer step, 0-based, continued on resume
    wall_time REAL NOT NULL,              -- unix time when the step's record closed
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
"""

_SCALARS = """\
CREATE TABLE IF NOT EXISTS scalars (
    run_id INTEGER NOT NULL,
    step   INTEGER NOT NULL,
    key    TEXT NOT NULL,                 -- run.log keys, lr/group{i}, amp_scale
    value  REAL,                          -- NULL stores NaN
    PRIMARY KEY (run_id, key, step)
) WITHOUT ROWID;
"""

_HISTS = """\
CREATE TABLE IF NOT EXISTS hists (
    run_id    INTEGER NOT NULL,
    step      INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    kind      TEXT NOT NULL,              -- 'act' (primary output) or 'grad' (parameter gradients)
    lo        REAL,                       -- range of the finite values at this step
    hi        REAL,
    nonfinite INTEGER NOT NULL,           -- NaN/Inf values, left out of the bins
    counts    TEXT NOT NULL,              -- JSON list of 64 bin counts, equal width over [lo, hi]
    PRIMARY KEY (run_id, position, kind, step)
) WITHOUT ROWID;
"""

# Versions 1 and 2: one row per value.
_VALUES_V1 = """\
CREATE TABLE IF NOT EXISTS stats (
    run_id   INTEGER NOT NULL,
    step     INTEGER NOT NULL,
    position INTEGER NOT NULL,            -- layers.position
    stat     TEXT NOT NULL,               -- grad_norm, act_mean, ... (docs/statistics.md)
    value    REAL,                        -- NULL stores NaN (SQLite has no NaN); +-Inf as is
    PRIMARY KEY (run_id, position, stat, step)
) WITHOUT ROWID;
"""

# Version 3: each statistic's name once in `stats`, the numbers in `segments` (store/segments.py says how).
_VALUES_V3 = """\
CREATE TABLE IF NOT EXISTS stats (
    stat_id INTEGER PRIMARY KEY,
    name    TEXT NOT NULL UNIQUE          -- grad_norm, act_mean, ... (docs/statistics.md)
);
CREATE TABLE IF NOT EXISTS segments (
    seg_id     INTEGER PRIMARY KEY,       -- write order: a later segment wins where two hold a cell
    run_id     INTEGER NOT NULL,
    stat_id    INTEGER NOT NULL,          -- stats.stat_id
    block      INTEGER NOT NULL,          -- layer positions block*64 .. block*64 + n_rows - 1
    first_step INTEGER NOT NULL,
    last_step  INTEGER NOT NULL,
    n_rows     INTEGER NOT NULL,
    n_steps    INTEGER NOT NULL,
    steps      BLOB NOT NULL,             -- int64 little-endian, the segment's recorded steps ascending
    width      INTEGER NOT NULL,          -- 4: float32, 8: float64 (little-endian)
    mask       BLOB,                      -- packed bits, row-major [n_rows, n_steps]: 1 = recorded; NULL: all
    vals       BLOB NOT NULL              -- the recorded values only, row-major; NaN and +-Inf as themselves
);
CREATE INDEX IF NOT EXISTS segments_by_stat ON segments(run_id, stat_id, block, first_step, last_step);
"""

DDL_V1 = "\n" + _RUNS + _LAYERS.replace("{role}", "") + _STEPS + _VALUES_V1 + _SCALARS + _HISTS
# Version 3: runs, steps, scalars and hists as in version 1; layers gain v2's role.
DDL = "\n" + _RUNS + _LAYERS.replace("{role}", _ROLE) + _STEPS + _VALUES_V3 + _SCALARS + _HISTS
