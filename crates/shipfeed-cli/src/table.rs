//! Aligned text tables, as the commands print them: a header, then one line per row, columns
//! two spaces apart, no trailing spaces.

use std::fmt::Write as _;

/// `header` and `rows` as lines of left-aligned columns (widths in characters).
pub(crate) fn aligned<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(|cell| cell.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; N]| {
        let mut text = String::new();
        for (cell, width) in cells.iter().zip(widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
    out
}

/// A time as the tables show it: `2024-06-01T12:00:00Z`.
pub(crate) fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_by_characters_without_trailing_spaces() {
        let text = aligned(
            ["A", "LONG HEADER", "C"],
            &[
                ["één".to_owned(), "x".to_owned(), String::new()],
                ["b".to_owned(), "yy".to_owned(), "z".to_owned()],
            ],
        );
        assert_eq!(text, "A    LONG HEADER  C\néén  x\nb    yy           z\n");
    }
}
