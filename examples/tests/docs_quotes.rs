//! `docs/embedding.md` explains the contract by quoting the two embedding
//! examples. Every quote must still be, verbatim, in the file it names, so
//! the page cannot drift from code that is compiled and run.

use std::fs;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `(source path, quoted lines)` for each `<!-- quote: PATH -->` block.
fn quotes(doc: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .strip_prefix("<!-- quote: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```rust"),
            "the quote marker for {path} must be followed by a ```rust block"
        );
        let block: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        found.push((path.to_string(), block.join("\n") + "\n"));
    }
    found
}

#[test]
fn every_quote_in_embedding_md_is_in_its_source_file() {
    let doc = fs::read_to_string(root().join("docs/embedding.md")).expect("docs/embedding.md");
    let quotes = quotes(&doc);
    assert!(quotes.len() >= 10, "only {} quotes found", quotes.len());
    for (path, quote) in &quotes {
        let source = fs::read_to_string(root().join(path)).expect(path);
        assert!(
            source.contains(quote.as_str()),
            "docs/embedding.md quotes {path}, which no longer has:\n{quote}"
        );
    }
    // No code on the page escapes the check.
    let blocks = doc.matches("```rust").count();
    assert_eq!(
        blocks,
        quotes.len(),
        "a ```rust block without a quote marker"
    );
}

#[test]
fn a_changed_quote_is_caught() {
    let doc = "<!-- quote: examples/blocking.rs -->\n```rust\n    fn no_such_function() {}\n```\n";
    let quotes = quotes(doc);
    let source = fs::read_to_string(root().join(&quotes[0].0)).expect("source");
    assert!(!source.contains(quotes[0].1.as_str()));
}
