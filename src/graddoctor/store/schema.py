"""The run store's schema, as SQL text, versioned with PRAGMA user_version (README: The run store)."""

APPLICATION_ID = 0x47444F43  # "GDOC": marks an SQLite file as a graddoctor store
SCHEMA_VERSION = 1

DDL = """
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
CREATE TABLE IF NOT EXISTS layers (
    run_id   INTEGER NOT NULL REFERENCES runs(run_id),
    position INTEGER NOT NULL,            -- forward order, input side first
    layer    TEXT NOT NULL,               -- qualified module name ('' is the root module)
    type     TEXT NOT NULL,               -- module class name
    kind     TEXT NOT NULL,               -- 'param' (owns trainable parameters) or 'activation'
    n_params INTEGER NOT NULL,            -- trainable parameters owned directly (tied: counted once)
    param_shapes TEXT NOT NULL DEFAULT '[]', -- JSON {name: shape} of those parameters ('weight': [out, in])
    PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS steps (
    run_id    INTEGER NOT NULL,
    step      INTEGER NOT NULL,           -- optimizer step, 0-based, continued on resume
    wall_time REAL NOT NULL,              -- unix time when the step's record closed
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stats (
    run_id   INTEGER NOT NULL,
    step     INTEGER NOT NULL,
    position INTEGER NOT NULL,            -- layers.position
    stat     TEXT NOT NULL,               -- grad_norm, act_mean, ... (README: Statistics)
    value    REAL,                        -- NULL stores NaN (SQLite has no NaN); +-Inf as is
    PRIMARY KEY (run_id, position, stat, step)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS scalars (
    run_id INTEGER NOT NULL,
    step   INTEGER NOT NULL,
    key    TEXT NOT NULL,                 -- run.log keys, lr/group{i}, amp_scale
    value  REAL,                          -- NULL stores NaN
    PRIMARY KEY (run_id, key, step)
) WITHOUT ROWID;
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
