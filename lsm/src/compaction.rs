//! Leveled compaction policy: a pure function from a snapshot of the levels to a plan (STYLE.md:
//! policies are pure, plan then apply). The engine runs a plan incrementally (`compact_step`).

use crate::config::LsmConfig;
use crate::table::TableMeta;
use bytes::Bytes;

/// One compaction to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CompactionPlan {
    /// The level compacted from.
    pub(crate) level: usize,
    /// Tables of `level` (for level 0: newest first).
    pub(crate) upper: Vec<u64>,
    /// Overlapping tables of `level + 1`, in key order.
    pub(crate) lower: Vec<u64>,
    /// Whether no level below `level + 1` holds a table, so tombstones past their grace may go.
    pub(crate) bottommost: bool,
    /// A single table with nothing below overlapping: moved by a manifest edit, not rewritten.
    pub(crate) trivial_move: bool,
}

fn level_bytes(level: &[TableMeta]) -> u64 {
    level
        .iter()
        .fold(0u64, |sum, t| sum.saturating_add(t.size_bytes))
}

/// Chooses the most urgent compaction, if any level is over its target. `cursors[level]` is the
/// key after which the previous compaction of that level stopped (round-robin through the keys).
pub(crate) fn pick(
    levels: &[Vec<TableMeta>],
    cursors: &[Bytes],
    config: &LsmConfig,
) -> Option<CompactionPlan> {
    let last = levels.len().checked_sub(1)?;
    // Scores in percent of target; the deepest level never compacts further.
    let mut best: Option<(u64, usize)> = None;
    for (level, tables) in levels.iter().enumerate().take(last) {
        let score = if level == 0 {
            tables.len() as u64 * 100 / config.level0_compaction_tables as u64
        } else {
            level_bytes(tables).saturating_mul(100) / config.level_bytes_max(level).max(1)
        };
        if score >= 100 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, level));
        }
    }
    let (_, level) = best?;
    let upper: Vec<&TableMeta> = if level == 0 {
        levels[0].iter().collect()
    } else {
        let after = cursors.get(level).cloned().unwrap_or_default();
        let tables = &levels[level];
        let next = tables
            .iter()
            .find(|t| t.largest > after || after.is_empty())
            .or_else(|| tables.first())?;
        vec![next]
    };
    let smallest = upper.iter().map(|t| t.smallest.clone()).min()?;
    let largest = upper.iter().map(|t| t.largest.clone()).max()?;
    let lower: Vec<u64> = levels[level + 1]
        .iter()
        .filter(|t| t.overlaps(&smallest, &largest))
        .map(|t| t.id)
        .collect();
    let bottommost = levels[level + 2..].iter().all(|l| l.is_empty());
    Some(CompactionPlan {
        level,
        trivial_move: upper.len() == 1 && lower.is_empty(),
        upper: upper.iter().map(|t| t.id).collect(),
        lower,
        bottommost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: u64, a: &str, z: &str, size: u64) -> TableMeta {
        TableMeta {
            id,
            smallest: Bytes::copy_from_slice(a.as_bytes()),
            largest: Bytes::copy_from_slice(z.as_bytes()),
            size_bytes: size,
            entry_count: 1,
        }
    }

    #[test]
    fn nothing_to_do_under_targets() {
        let config = LsmConfig::tiny_for_tests();
        let levels = vec![vec![table(1, "a", "b", 10)], vec![], vec![], vec![]];
        assert_eq!(pick(&levels, &[], &config), None);
    }

    #[test]
    fn level0_goes_whole_into_overlapping_level1() {
        let config = LsmConfig::tiny_for_tests();
        let levels = vec![
            vec![
                table(5, "c", "d", 10),
                table(4, "a", "b", 10),
                table(3, "b", "c", 10),
            ],
            vec![table(1, "a", "a", 10), table(2, "x", "y", 10)],
            vec![],
            vec![],
        ];
        let plan = pick(&levels, &[], &config).expect("plan");
        assert_eq!(plan.level, 0);
        assert_eq!(plan.upper, vec![5, 4, 3]);
        assert_eq!(plan.lower, vec![1]);
        assert!(plan.bottommost);
        assert!(!plan.trivial_move);
    }

    #[test]
    fn deeper_level_round_robins_one_table() {
        let config = LsmConfig::tiny_for_tests();
        let big = config.level1_bytes_max;
        let levels = vec![
            vec![],
            vec![table(1, "a", "c", big), table(2, "d", "f", big)],
            vec![table(3, "e", "g", 10)],
            vec![table(4, "a", "z", 10)],
        ];
        let cursors = vec![Bytes::new(), Bytes::from_static(b"c")];
        let plan = pick(&levels, &cursors, &config).expect("plan");
        assert_eq!(
            (plan.level, plan.upper.clone(), plan.lower.clone()),
            (1, vec![2], vec![3])
        );
        assert!(!plan.bottommost, "level 3 still holds data");
    }
}
