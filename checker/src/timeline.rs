//! ASCII timelines of a failing window: one lane per client, one bar per operation.
//!
//! Time is compressed to the order of events: each distinct instant gets a column, pushed right
//! just far enough for every bar ending there to hold its label. Bars keep their relative order,
//! which is all linearizability cares about.

use std::collections::BTreeMap;

use crate::history::ClientId;
use crate::verdict::{Role, Violation, WindowOp};

/// Longest label drawn inside a bar, in characters; longer ones are cut with `~`.
pub const LABEL_CHARS_MAX: usize = 28;

/// Geometry shared by the ASCII and HTML renderers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Lane names, top to bottom (`client 3`, or `client 3'` for an extra row of one client).
    pub lanes: Vec<String>,
    /// One bar per window operation, in the window's order.
    pub bars: Vec<Bar>,
    /// Columns the widest lane needs.
    pub width: usize,
}

/// Where one operation is drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Index into [`Layout::lanes`].
    pub lane: usize,
    /// First column.
    pub start: usize,
    /// Last column (inclusive).
    pub end: usize,
    /// True if the outcome is unknown (the bar has no real end).
    pub open: bool,
    /// The label, already shortened to [`LABEL_CHARS_MAX`].
    pub label: String,
}

fn label_of(op: &WindowOp) -> String {
    let text = match op.linearized_at {
        Some(position) => format!("{position}:{}", op.label),
        None => op.label.clone(),
    };
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= LABEL_CHARS_MAX {
        text
    } else {
        let mut cut: String = chars[..LABEL_CHARS_MAX - 1].iter().collect();
        cut.push('~');
        cut
    }
}

/// Computes lanes and columns for a window.
pub fn layout(window: &[WindowOp]) -> Layout {
    // Column of each distinct instant.
    let mut instants: Vec<u64> = Vec::new();
    for op in window {
        instants.push(op.invoke_time);
        instants.extend(op.return_time);
    }
    instants.sort_unstable();
    instants.dedup();
    let rank = |t: u64| instants.partition_point(|&x| x < t);
    let labels: Vec<String> = window.iter().map(label_of).collect();
    // An operation that returns at the instant it is invoked still gets a bar: it reaches
    // past its column, and the next instant makes room for it.
    let instant_bar_end = |op: &WindowOp, label: &String, column: &[usize]| -> Option<usize> {
        (op.return_time == Some(op.invoke_time))
            .then(|| column[rank(op.invoke_time)] + label.chars().count() + 1)
    };
    let mut column = vec![0usize; instants.len()];
    for r in 0..instants.len() {
        let mut x = if r == 0 { 0 } else { column[r - 1] + 2 };
        for (op, label) in window.iter().zip(&labels) {
            let starts_before = rank(op.invoke_time) < r;
            if starts_before && op.return_time.map(rank) == Some(r) {
                x = x.max(column[rank(op.invoke_time)] + label.chars().count() + 1);
            }
            if r > 0 && rank(op.invoke_time) == r - 1 {
                if let Some(end) = instant_bar_end(op, label, &column) {
                    x = x.max(end + 2);
                }
            }
        }
        column[r] = x;
    }
    let mut width = column.last().map_or(0, |c| c + 1);
    for (op, label) in window.iter().zip(&labels) {
        if let Some(end) = instant_bar_end(op, label, &column) {
            width = width.max(end + 1);
        }
    }
    for (op, label) in window.iter().zip(&labels) {
        if op.return_time.is_none() {
            width = width.max(column[rank(op.invoke_time)] + label.chars().count() + 3);
        }
    }

    // Rows: one per client, plus extra rows when a client's bars overlap (after an unknown outcome).
    let mut clients: BTreeMap<ClientId, Vec<usize>> = BTreeMap::new();
    let mut lanes = Vec::new();
    let mut bars: Vec<Option<Bar>> = vec![None; window.len()];
    let mut order: Vec<usize> = (0..window.len()).collect();
    order.sort_by_key(|&i| (window[i].client, window[i].invoke_time, window[i].index));
    let mut row_ends: Vec<(ClientId, usize, usize)> = Vec::new(); // (client, lane, last end column)
    for i in order {
        let op = &window[i];
        let start = column[rank(op.invoke_time)];
        let end = match op.return_time {
            Some(_) if instant_bar_end(op, &labels[i], &column).is_some() => {
                instant_bar_end(op, &labels[i], &column).unwrap_or(start)
            }
            Some(t) => column[rank(t)],
            None => width - 1,
        };
        let free = row_ends
            .iter()
            .position(|&(client, _, last)| client == op.client && last < start);
        let lane = match free {
            Some(row) => {
                row_ends[row].2 = end;
                row_ends[row].1
            }
            None => {
                let rows = clients.entry(op.client).or_default();
                let name = format!("client {}{}", op.client, "'".repeat(rows.len()));
                lanes.push(name);
                rows.push(lanes.len() - 1);
                row_ends.push((op.client, lanes.len() - 1, end));
                lanes.len() - 1
            }
        };
        bars[i] = Some(Bar {
            lane,
            start,
            end,
            open: op.return_time.is_none(),
            label: labels[i].clone(),
        });
    }
    // Lanes in client order, extra rows right below their client.
    let mut lane_order: Vec<usize> = clients.values().flatten().copied().collect();
    lane_order.dedup();
    let mut new_index = vec![0usize; lanes.len()];
    for (position, &lane) in lane_order.iter().enumerate() {
        new_index[lane] = position;
    }
    let lanes = lane_order.iter().map(|&l| lanes[l].clone()).collect();
    let bars = bars
        .into_iter()
        .map(|bar| {
            let mut bar = bar.expect("every window operation gets a bar");
            bar.lane = new_index[bar.lane];
            bar
        })
        .collect();
    Layout { lanes, bars, width }
}

fn glyphs(role: Role) -> (char, char, char) {
    match role {
        Role::Linearized => ('[', '=', ']'),
        Role::Pending => ('[', '-', ']'),
        Role::Culprit => ('<', '!', '>'),
        Role::Witness => ('{', '~', '}'),
        Role::Context => ('(', '-', ')'),
    }
}

/// Draws the window of a violation; the first line is the explanation.
pub fn render(violation: &Violation) -> String {
    let layout = layout(&violation.window);
    let name_width = layout
        .lanes
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let mut rows: Vec<Vec<char>> = vec![vec![' '; layout.width]; layout.lanes.len()];
    for (bar, op) in layout.bars.iter().zip(&violation.window) {
        let (open, fill, close) = glyphs(op.role);
        let row = &mut rows[bar.lane];
        for cell in row.iter_mut().take(bar.end + 1).skip(bar.start) {
            *cell = fill;
        }
        row[bar.start] = open;
        row[bar.end] = if bar.open { '?' } else { close };
        for (offset, c) in bar.label.chars().enumerate() {
            let x = bar.start + 1 + offset;
            if x < bar.end {
                row[x] = c;
            }
        }
    }
    let mut out = String::new();
    out.push_str(&violation.explanation);
    out.push('\n');
    if let (Some(first), Some(last)) = (
        violation.window.first(),
        violation
            .window
            .iter()
            .map(|w| w.return_time.unwrap_or(w.invoke_time))
            .max(),
    ) {
        out.push_str(&format!(
            "window: {} of the key's {} operations, times {}..{}\n",
            violation.window.len(),
            violation.key_operations,
            first.invoke_time,
            last
        ));
    }
    for (name, row) in layout.lanes.iter().zip(rows) {
        let line: String = row.into_iter().collect();
        out.push_str(&format!("{name:>name_width$} |{}\n", line.trim_end()));
    }
    out.push_str(
        "legend: [n:op==] linearized (n-th in the longest linearizable prefix)  [op--] not linearized  \
         <op!!> cannot be linearized  {op~~} evidence  (op--) context  [op--? outcome unknown (runs to the end)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(index: usize, client: u64, label: &str, t: (u64, Option<u64>), role: Role) -> WindowOp {
        WindowOp {
            index,
            client,
            label: label.to_string(),
            invoke_time: t.0,
            return_time: t.1,
            reported_time: None,
            role,
            linearized_at: None,
        }
    }

    #[test]
    fn bars_hold_labels_and_keep_order() {
        let window = vec![
            op(0, 1, "write 1 ok", (1, Some(2)), Role::Linearized),
            op(1, 2, "read nil", (3, Some(4)), Role::Culprit),
            op(2, 1, "write 2 ?", (5, None), Role::Pending),
            op(3, 1, "read 2", (6, Some(7)), Role::Pending),
            op(4, 3, "instant", (6, Some(6)), Role::Pending),
        ];
        let violation = Violation {
            explanation: "x".into(),
            window,
            key_operations: 4,
            prefix_length: 1,
        };
        let text = render(&violation);
        assert!(text.contains("[write 1 ok]"), "{text}");
        assert!(text.contains("<read nil>"), "{text}");
        assert!(text.contains("client 1'"), "{text}");
        assert!(text.contains("[instant]"), "{text}");
        let l = layout(&violation.window);
        assert!(l.bars[0].end < l.bars[1].start);
    }
}
