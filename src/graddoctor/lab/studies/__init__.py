"""The registered studies: each module here exposes `STUDY = Study(...)` (see graddoctor.lab.study)."""
