//! The probes of docs/scaling.md and deploy/kubernetes, run against a live stack.
