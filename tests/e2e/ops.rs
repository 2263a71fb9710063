//! Operations recipes of docs/operations.md, tried: the systemd unit, the LSB init script, the
//! foreground supervisor as PID 1 of a new PID namespace.
