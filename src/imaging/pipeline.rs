//! The image pipeline (being written).
