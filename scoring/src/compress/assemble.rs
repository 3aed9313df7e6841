//! Assembly: kept line runs of each file, in file and line order, with a header per file and
//! one marker line, in the language's comment syntax, for each elided run.

use std::fmt::Write;
use std::str::FromStr;

use ctxzip_chunker::Lang;
use ctxzip_chunker::lines::LineIndex;

/// How the context is laid out. JSON wraps the text layout with chunk lists and stats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// Each file under a `==> path <==` header; left-out code is marked by `...` comments.
    #[default]
    #[serde(alias = "txt")]
    Text,
    /// Each file's path, then its code in a fenced block.
    #[serde(alias = "md")]
    Markdown,
    /// The text layout; a JSON result wraps it with the kept chunks and the stats.
    Json,
    /// Each file in a `<file path="…">` element, XML-escaped.
    Xml,
}

impl Format {
    /// The format's name, as every surface spells it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Markdown => "markdown",
            Format::Json => "json",
            Format::Xml => "xml",
        }
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" | "txt" => Ok(Format::Text),
            "markdown" | "md" => Ok(Format::Markdown),
            "json" => Ok(Format::Json),
            "xml" => Ok(Format::Xml),
            other => Err(format!(
                "unknown format {other:?}: use text, markdown, json or xml"
            )),
        }
    }
}

/// One file's kept rows (0-based, inclusive, sorted, disjoint).
pub struct FileRuns<'a> {
    pub path: &'a str,
    pub lang: Lang,
    pub text: &'a str,
    pub runs: Vec<(usize, usize)>,
}

/// Merges overlapping or touching row runs.
pub fn merge_runs(mut runs: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    runs.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(runs.len());
    for (a, b) in runs {
        match merged.last_mut() {
            Some(last) if a <= last.1 + 1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

pub fn assemble(format: Format, files: &[FileRuns]) -> String {
    let mut out = String::new();
    for file in files.iter().filter(|f| !f.runs.is_empty()) {
        let body = file_body(file, format == Format::Xml);
        match format {
            Format::Text | Format::Json => {
                let _ = writeln!(out, "==> {} <==", file.path);
                out.push_str(&body);
            }
            Format::Markdown => {
                let fence = if body.contains("```") { "````" } else { "```" };
                let _ = writeln!(
                    out,
                    "{}\n{fence}{}",
                    file.path,
                    markdown_lang(file.lang, file.path)
                );
                out.push_str(&body);
                let _ = writeln!(out, "{fence}");
            }
            Format::Xml => {
                let _ = writeln!(out, "<file path=\"{}\">", xml_escape(file.path));
                out.push_str(&body);
                out.push_str("</file>\n");
            }
        }
    }
    out
}

fn file_body(file: &FileRuns, escape: bool) -> String {
    let index = LineIndex::new(file.text);
    let n_rows = index.n_rows();
    let mut body = String::new();
    let mut next_row = 0;
    for &(first, last) in &file.runs {
        let last = last.min(n_rows.saturating_sub(1));
        if first > last {
            continue;
        }
        if first > next_row {
            body.push_str(&marker(file, &index, next_row, first));
        }
        let text = index.rows_text(file.text, first, last);
        if escape {
            body.push_str(&xml_escape(text));
        } else {
            body.push_str(text);
        }
        if !text.ends_with('\n') {
            body.push('\n');
        }
        next_row = last + 1;
    }
    if next_row < n_rows {
        body.push_str(&marker(file, &index, next_row, n_rows));
    }
    body
}

/// The marker for rows `first..end`, indented like the first elided line with code.
fn marker(file: &FileRuns, index: &LineIndex, first: usize, end: usize) -> String {
    let indent = (first..end)
        .map(|r| index.rows_text(file.text, r, r))
        .find(|line| !line.trim().is_empty())
        .map(|line| {
            let trimmed = line.trim_start();
            &line[..line.len() - trimmed.len()]
        })
        .unwrap_or("");
    let comment = file.lang.spec().line_comment;
    if comment.contains("...") {
        format!("{indent}{comment}\n")
    } else {
        format!("{indent}{comment} ...\n")
    }
}

/// Extensions read as one language but fenced as another: reStructuredText is chunked as
/// prose with Markdown's rules, but highlighted as `rst`.
const FENCE_BY_EXTENSION: &[(&str, &str)] = &[("rst", "rst")];

/// The info string of a file's fenced block.
fn markdown_lang(lang: Lang, path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    if let Some((_, fence)) = FENCE_BY_EXTENSION
        .iter()
        .find(|(ext, _)| extension.as_deref() == Some(*ext))
    {
        return fence;
    }
    match lang {
        Lang::Text => "",
        other => other.name(),
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elided_runs_become_one_marker_each() {
        let text = "import os\n\ndef a():\n    return 1\n\ndef b():\n    x = 2\n    return x\n";
        let file = FileRuns {
            path: "m.py",
            lang: Lang::Python,
            text,
            runs: merge_runs(vec![(2, 3), (5, 5), (7, 7)]),
        };
        assert_eq!(
            assemble(Format::Text, &[file]),
            "==> m.py <==\n# ...\ndef a():\n    return 1\n# ...\ndef b():\n    # ...\n    return x\n"
        );
    }

    #[test]
    fn markdown_and_xml_wrap_each_file() {
        let file = |text| FileRuns {
            path: "a.rs",
            lang: Lang::Rust,
            text,
            runs: vec![(0, 0)],
        };
        assert_eq!(
            assemble(Format::Markdown, &[file("fn a() {}\n")]),
            "a.rs\n```rust\nfn a() {}\n```\n"
        );
        let doc = |path| FileRuns {
            path,
            lang: Lang::Markdown,
            text: "Title\n=====\n",
            runs: vec![(0, 1)],
        };
        assert_eq!(
            assemble(Format::Markdown, &[doc("docs/index.rst")]),
            "docs/index.rst\n```rst\nTitle\n=====\n```\n"
        );
        assert_eq!(
            assemble(Format::Markdown, &[doc("README.md")]),
            "README.md\n```markdown\nTitle\n=====\n```\n"
        );
        assert_eq!(
            assemble(Format::Xml, &[file("fn a() -> Vec<u8> {}")]),
            "<file path=\"a.rs\">\nfn a() -&gt; Vec&lt;u8&gt; {}\n</file>\n"
        );
    }
}
