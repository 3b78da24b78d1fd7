"""The seed article's claims C1-C8 (shared/seed/CLAIMS.md), each a small measured experiment with a verdict rule.

Each module defines `Claim`s (graddoctor.lab.claims._common.Claim): the runs it needs, a `judge`
computing its numbers and verdict from the store, and a `figure`. The `seed-claims` study
(graddoctor.lab.studies.seed_claims) runs them all.
"""
