//! Just enough Markdown to read the specs in `docs/`: sections by heading, pipe tables, code
//! spans and fenced code blocks. Lines inside fenced code blocks are never taken for headings
//! or table rows (a TOML comment starts with `#` too).

/// One document of `docs/`, named as a failure message should name it.
#[derive(Clone, Copy)]
pub(crate) struct Doc {
    /// The path from the repository's root, e.g. `docs/status-json.md`.
    pub path: &'static str,
    /// The whole text.
    pub text: &'static str,
}

impl Doc {
    /// The part of the document under the heading line `heading` (e.g. "## `events --json`"),
    /// up to the next heading of the same or a higher level. Panics, naming the document, when
    /// the heading is missing.
    pub(crate) fn section(&self, heading: &str) -> Section {
        let level = heading_level(heading)
            .unwrap_or_else(|| panic!("`{heading}` is not a Markdown heading line"));
        let lines = prose_lines(self.text);
        let Some(start) = lines
            .iter()
            .position(|(line, prose)| *prose && line.trim_end() == heading)
        else {
            panic!("{}: no heading `{heading}`", self.path);
        };
        let end = lines[start + 1..]
            .iter()
            .position(|(line, prose)| *prose && heading_level(line).is_some_and(|l| l <= level))
            .map_or(lines.len(), |i| start + 1 + i);
        Section {
            doc: *self,
            heading: heading.to_string(),
            lines: lines[start + 1..end].to_vec(),
        }
    }
}

/// The lines under one heading.
pub(crate) struct Section {
    doc: Doc,
    heading: String,
    /// Each line with whether it is prose (outside a fenced code block).
    lines: Vec<(&'static str, bool)>,
}

impl Section {
    /// Where this section is, for messages: `docs/x.md, section "## y"`.
    pub(crate) fn place(&self) -> String {
        format!("{}, section \"{}\"", self.doc.path, self.heading)
    }

    /// The pipe tables of the section, in order.
    pub(crate) fn tables(&self) -> Vec<Table> {
        let mut tables = Vec::new();
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut flush = |rows: &mut Vec<Vec<String>>| {
            // A table is a header row, a `|---|` separator row and its body.
            if rows.len() >= 2 {
                let mut rows = std::mem::take(rows);
                let header = rows.remove(0);
                rows.remove(0);
                tables.push(Table {
                    place: self.place(),
                    header,
                    rows,
                });
            }
            rows.clear();
        };
        for (line, prose) in &self.lines {
            let line = line.trim();
            if *prose && line.starts_with('|') {
                rows.push(cells(line));
            } else {
                flush(&mut rows);
            }
        }
        flush(&mut rows);
        tables
    }

    /// The one table whose header is exactly `header` (e.g. `["key", "type", "meaning"]`).
    pub(crate) fn table(&self, header: &[&str]) -> Table {
        let mut found: Vec<Table> = self
            .tables()
            .into_iter()
            .filter(|t| t.header == header)
            .collect();
        match found.len() {
            1 => found.remove(0),
            n => panic!(
                "{}: expected one table headed | {} |, found {n}",
                self.place(),
                header.join(" | ")
            ),
        }
    }

    /// The prose of the section, code blocks left out, one line after another.
    pub(crate) fn prose(&self) -> String {
        let mut text = String::new();
        for (line, prose) in &self.lines {
            if *prose {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    /// The heading lines inside the section (its subsections' headings), in order.
    pub(crate) fn headings(&self) -> Vec<&'static str> {
        self.lines
            .iter()
            .filter(|(line, prose)| *prose && heading_level(line).is_some())
            .map(|(line, _)| line.trim_end())
            .collect()
    }

    /// The section of the subsection under `heading`, one of [`Section::headings`].
    pub(crate) fn subsection(&self, heading: &str) -> Section {
        self.doc.section(heading)
    }

    /// The contents of the fenced code blocks of language `lang` (` ```json `), in order.
    pub(crate) fn code_blocks(&self, lang: &str) -> Vec<String> {
        let mut blocks = Vec::new();
        let mut current: Option<String> = None;
        for (line, _) in &self.lines {
            let trimmed = line.trim();
            match &mut current {
                None if trimmed == format!("```{lang}") => current = Some(String::new()),
                Some(_) if trimmed == "```" => blocks.extend(current.take()),
                Some(block) => {
                    block.push_str(line);
                    block.push('\n');
                }
                None => {}
            }
        }
        blocks
    }
}

/// A pipe table: its header cells and its rows of cells, trimmed.
pub(crate) struct Table {
    /// Where the table is, for messages.
    pub place: String,
    /// The header cells.
    pub header: Vec<String>,
    /// The body rows.
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The index of the column headed `name`. Panics, naming the table, when there is none.
    pub(crate) fn column(&self, name: &str) -> usize {
        self.header
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("{}: the table has no column `{name}`", self.place))
    }

    /// The cell of `row` in the column headed `name` (empty when the row is short).
    pub(crate) fn cell<'a>(&self, row: &'a [String], name: &str) -> &'a str {
        row.get(self.column(name)).map_or("", String::as_str)
    }
}

/// The code spans of `text`: `` `a`, `b` `` gives `["a", "b"]`.
pub(crate) fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The level of a heading line (`## x` is 2), `None` for other lines.
fn heading_level(line: &str) -> Option<usize> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    (hashes > 0 && line[hashes..].starts_with(' ')).then_some(hashes)
}

/// Every line of `text`, with whether it is prose (not inside a fenced code block, and not a
/// fence itself).
fn prose_lines(text: &'static str) -> Vec<(&'static str, bool)> {
    let mut in_code = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                return (line, false);
            }
            (line, !in_code)
        })
        .collect()
}

/// The cells of a table row, trimmed; `\|` inside a cell is a literal `|`.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                chars.next();
                if let Some(cell) = cells.last_mut() {
                    cell.push('|');
                }
            }
            '|' => cells.push(String::new()),
            c => {
                if let Some(cell) = cells.last_mut() {
                    cell.push(c);
                }
            }
        }
    }
    cells.iter().map(|c| c.trim().to_string()).collect()
}
