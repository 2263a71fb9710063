//! The harness every parser's properties share: the bounded case count, a runtime for readers
//! over byte slices, and the mutations (insert, delete, replace, duplicate) of valid input.

use std::future::Future;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// `cases` per property, unless `PROPTEST_CASES` asks for another number. No failure file is
/// written: regressions live beside their parser's properties as named tests.
pub(crate) fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs a future that never waits for I/O (a reader over a byte slice) to completion.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds without I/O or timers")
        .block_on(future)
}

/// One edit of a mutation. Positions are [`Index`]es so that one edit fits an input of any length.
#[derive(Clone, Debug)]
pub(crate) enum Edit<T> {
    Insert(Index, T),
    Delete(Index),
    Replace(Index, T),
    /// Repeats a short run of the input in place: duplicated keys, `..`, `%%`, `&&`.
    Duplicate(Index, usize),
}

pub(crate) fn edits<T: Clone + std::fmt::Debug + 'static>(
    unit: impl Strategy<Value = T> + Clone + 'static,
    max: usize,
) -> impl Strategy<Value = Vec<Edit<T>>> {
    let edit = prop_oneof![
        3 => (any::<Index>(), unit.clone()).prop_map(|(at, u)| Edit::Insert(at, u)),
        2 => any::<Index>().prop_map(Edit::Delete),
        3 => (any::<Index>(), unit).prop_map(|(at, u)| Edit::Replace(at, u)),
        1 => (any::<Index>(), 1..8usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ];
    vec(edit, 0..=max)
}

pub(crate) fn apply_edits<T: Clone>(input: &mut Vec<T>, edits: &[Edit<T>]) {
    for edit in edits {
        match edit {
            Edit::Insert(at, u) => {
                let at = at.index(input.len() + 1);
                input.insert(at, u.clone());
            }
            Edit::Delete(at) if !input.is_empty() => {
                let at = at.index(input.len());
                input.remove(at);
            }
            Edit::Replace(at, u) if !input.is_empty() => {
                let at = at.index(input.len());
                input[at] = u.clone();
            }
            Edit::Duplicate(at, n) if !input.is_empty() => {
                let at = at.index(input.len());
                let end = (at + n).min(input.len());
                let run = input[at..end].to_vec();
                input.splice(end..end, run);
            }
            _ => {}
        }
    }
}

/// `text` after `edits`, character by character.
pub(crate) fn mutate_str(text: &str, edits: &[Edit<char>]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    apply_edits(&mut chars, edits);
    chars.into_iter().collect()
}

/// A character for a mutation: mostly from `pool` (the grammar's delimiters), sometimes any.
pub(crate) fn char_from(pool: &'static [char]) -> impl Strategy<Value = char> + Clone {
    prop_oneof![4 => select(pool), 1 => any::<char>()]
}

/// A byte for a mutation: mostly from `pool`, sometimes any.
pub(crate) fn byte_from(pool: &'static [u8]) -> impl Strategy<Value = u8> + Clone {
    prop_oneof![4 => select(pool), 1 => any::<u8>()]
}
