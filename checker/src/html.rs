//! A self-contained HTML page for a violation: inline CSS, no scripts, no external resources.
//!
//! It draws the same [`crate::timeline::layout`] as the ASCII timeline, in `ch` units of a
//! monospace font so labels fit their bars exactly.

use crate::timeline::layout;
use crate::verdict::{Role, Violation};

const LANE_HEIGHT_PX: usize = 34;
const NAME_WIDTH_CH: usize = 14;

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class_of(role: Role) -> &'static str {
    match role {
        Role::Linearized => "linearized",
        Role::Pending => "pending",
        Role::Culprit => "culprit",
        Role::Witness => "witness",
        Role::Context => "context",
    }
}

const STYLE: &str = "
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 20px; margin: 0 0 6px 0; }
p.explanation { font-size: 15px; max-width: 1100px; margin: 4px 0 14px 0; }
p.meta { color: #555; font-size: 13px; margin: 0 0 16px 0; }
.chart { font-family: 'DejaVu Sans Mono', Menlo, Consolas, monospace; font-size: 13px; position: relative; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px; overflow-x: auto; }
.lane { position: relative; height: 34px; border-bottom: 1px dashed #e4e4e4; }
.lane .name { position: absolute; left: 0; top: 8px; width: 13ch; color: #444; font-weight: 600; }
.bar { position: absolute; top: 5px; height: 22px; line-height: 22px; border-radius: 4px; box-sizing: border-box; padding-left: 0.5ch; white-space: nowrap; overflow: hidden; border: 1px solid; }
.linearized { background: #d8f0d8; border-color: #3c8d3c; color: #1f4d1f; }
.pending { background: #e3e8f2; border-color: #7d8fb3; color: #2b3a57; }
.culprit { background: #ffd6d6; border: 2px solid #c0392b; color: #7a1010; font-weight: 700; }
.witness { background: #ffefc7; border-color: #c08a1e; color: #5c4108; }
.context { background: #eeeeee; border-color: #9a9a9a; color: #333; }
.open { border-right-style: dashed; border-top-right-radius: 0; border-bottom-right-radius: 0; background-image: linear-gradient(to right, rgba(255,255,255,0) 60%, rgba(255,255,255,0.95)); }
.legend { margin-top: 14px; font-size: 13px; display: flex; flex-wrap: wrap; gap: 18px; align-items: center; }
.legend .swatch { display: inline-block; position: static; width: 5ch; height: 16px; vertical-align: middle; margin-right: 6px; }
";

/// Renders a full HTML page for `violation` found on `key`; `title` heads the page.
pub fn render(title: &str, key: &str, violation: &Violation) -> String {
    let layout = layout(&violation.window);
    let mut lanes = vec![String::new(); layout.lanes.len()];
    for (bar, op) in layout.bars.iter().zip(&violation.window) {
        let mut class = class_of(op.role).to_string();
        if bar.open {
            class.push_str(" open");
        }
        let end_text = match (op.return_time, op.reported_time) {
            (Some(t), _) => format!("returned at {t}"),
            (None, Some(t)) => format!("outcome unknown (reported at {t})"),
            (None, None) => "outcome unknown".to_string(),
        };
        let tooltip = format!(
            "op #{}: {} (client {}), invoked at {}, {end_text}",
            op.index, op.label, op.client, op.invoke_time
        );
        lanes[bar.lane].push_str(&format!(
            "<div class=\"bar {class}\" style=\"left: {}ch; width: {}ch\" title=\"{}\">{}</div>",
            NAME_WIDTH_CH + bar.start,
            bar.end - bar.start + 1,
            escape(&tooltip),
            escape(&bar.label),
        ));
    }
    let mut body = String::new();
    for (name, bars) in layout.lanes.iter().zip(lanes) {
        body.push_str(&format!(
            "<div class=\"lane\" style=\"min-width: {}ch\"><span class=\"name\">{}</span>{bars}</div>\n",
            NAME_WIDTH_CH + layout.width + 2,
            escape(name)
        ));
    }
    let legend = [
        (
            "linearized",
            "linearized (n: = position in the longest linearizable prefix)",
        ),
        ("pending", "not linearized at that point"),
        ("culprit", "cannot be linearized"),
        (
            "witness",
            "evidence (writers, overwrite, a read left with nothing to see)",
        ),
        ("context", "context around the failure"),
        (
            "pending open",
            "outcome unknown (may take effect later, or never)",
        ),
    ]
    .iter()
    .map(|(class, text)| format!("<span><span class=\"bar swatch {class}\"></span>{text}</span>"))
    .collect::<Vec<_>>()
    .join("");
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>{STYLE}</style></head><body>\n<h1>{title}: not linearizable, key {key}</h1>\n\
         <p class=\"explanation\">{explanation}</p>\n<p class=\"meta\">Window of {shown} of the \
         key's {total} operations; time runs left to right (compressed to the order of events), \
         one lane per client.</p>\n<div class=\"chart\" style=\"--lane: {LANE_HEIGHT_PX}px\">\n{body}</div>\n\
         <div class=\"legend\">{legend}</div>\n</body></html>\n",
        title = escape(title),
        key = escape(&format!("{key:?}")),
        explanation = escape(&violation.explanation),
        shown = violation.window.len(),
        total = violation.key_operations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::WindowOp;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let window = vec![WindowOp {
            index: 0,
            client: 1,
            label: "get \"<a>\"".into(),
            invoke_time: 1,
            return_time: Some(2),
            reported_time: None,
            role: Role::Culprit,
            linearized_at: None,
        }];
        let v = Violation {
            explanation: "a & b".into(),
            window,
            key_operations: 1,
            prefix_length: 0,
        };
        let page = render("t", "k", &v);
        assert!(page.contains("a &amp; b"));
        assert!(page.contains("&lt;a&gt;"));
        assert!(!page.contains("http"));
        assert!(!page.contains("<script"));
    }
}
