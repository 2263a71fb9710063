//! Parsing the URL protocol into an [`ImageRequest`] (being written).
