//! The checker: rules over a chaos run's [`Event`] history and its [`FinalState`].
//!
//! | rule | what it demands |
//! |---|---|
//! | `fence_order` | per resource and Redis epoch: fences unique; a grant that came back before another was asked for has the lower fence |
//! | `window_overlap` | per resource and epoch: a guard's validity ends before the next fence's grant came back (plus the drift) |
//! | `commit_fence_order` | per product: a commit that started after another has a fence at least as high |
//! | `read_under_fence` | every committed row's (product, fence, worker) has a claim (the stock read) under that fence |
//! | `one_outcome` | every produced order has exactly one outcome row; every garbage message at least one dead letter and at most one per push since Redis last lost its data; no row for an order never produced |
//! | `stock_balance` | final stock = initial − fulfilled units, never negative |
//! | `rejected_with_stock` | no order rejected `out_of_stock` whose quantity the final stock still covers (stock only falls during a run) |
//! | `in_flight` | no message left pending or in a processing list |
//!
//! - When a rule fails, then a [`Violation`] names it, says why and carries the minimal slice of
//!   history (the two events or rows in conflict) as evidence.
//! - A guard's window ends at its release when it was not lost then; otherwise (lost at
//!   release, a [`Event::Lost`] seen, or never released) at the latest deadline of its grant and
//!   its [`Event::Extend`]s.
//! - Not checked: Redlock extensions (not recorded; a lost Redlock guard's window end is a
//!   lower bound, so `window_overlap` can miss an overlap there, never invent one); grants that
//!   straddle a Redis epoch.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::history::{Event, FinalState, OutcomeRow};

/// One broken rule with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    /// The rule's name (see the module table).
    pub rule: &'static str,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The minimal history slice that shows it.
    pub evidence: Vec<serde_json::Value>,
}

/// Checks `history` against `state`; `drift_ms` is the clock drift the lock allows for.
pub fn check(history: &[Event], state: &FinalState, drift_ms: u64) -> Vec<Violation> {
    let mut violations = Vec::new();
    let epochs: Vec<u64> = history
        .iter()
        .filter_map(|event| match event {
            Event::Epoch { at_ms } => Some(*at_ms),
            _ => None,
        })
        .collect();
    let guards = guards_by_resource(history, &epochs);
    for ((_, _), guards) in guards {
        fence_order(&guards, &mut violations);
        window_overlap(&guards, drift_ms, &mut violations);
    }
    commit_fence_order(&state.outcomes, &mut violations);
    read_under_fence(history, &state.outcomes, &mut violations);
    one_outcome(history, state, &mut violations);
    stock_balance(state, &mut violations);
    rejected_with_stock(state, &mut violations);
    if state.in_flight > 0 {
        violations.push(Violation {
            rule: "in_flight",
            message: format!("{} messages still pending or processing", state.in_flight),
            evidence: Vec::new(),
        });
    }
    violations
}

/// One granted lock: its grant event and when its validity surely ended.
#[derive(Debug, Clone)]
struct Guard<'a> {
    grant: &'a Event,
    fence: u64,
    start_ms: u64,
    reply_ms: u64,
    /// The validity end: the release, or the last deadline (grant or extension) if lost /
    /// never released.
    end_ms: u64,
}

fn evidence<T: Serialize>(items: &[&T]) -> Vec<serde_json::Value> {
    items
        .iter()
        .filter_map(|item| serde_json::to_value(item).ok())
        .collect()
}

/// Guards grouped by (resource, epoch); guards straddling an epoch are left out.
fn guards_by_resource<'a>(
    history: &'a [Event],
    epochs: &[u64],
) -> BTreeMap<(String, usize), Vec<Guard<'a>>> {
    let mut releases: HashMap<(&str, u64, &str), (u64, bool)> = HashMap::new();
    let mut extended: HashMap<(&str, u64, &str), u64> = HashMap::new();
    let mut lost: HashSet<(&str, u64, &str)> = HashSet::new();
    for event in history {
        match event {
            Event::Release {
                resource,
                fence,
                worker,
                at_ms,
                lost,
            } => {
                releases.insert((resource, *fence, worker), (*at_ms, *lost));
            }
            Event::Extend {
                resource,
                fence,
                worker,
                deadline_ms,
                ..
            } => {
                let last = extended.entry((resource, *fence, worker)).or_default();
                *last = (*last).max(*deadline_ms);
            }
            Event::Lost {
                resource,
                fence,
                worker,
                ..
            } => {
                lost.insert((resource, *fence, worker));
            }
            _ => {}
        }
    }
    let mut out: BTreeMap<(String, usize), Vec<Guard<'a>>> = BTreeMap::new();
    for event in history {
        let Event::Grant {
            resource,
            fence,
            worker,
            start_ms,
            reply_ms,
            deadline_ms,
        } = event
        else {
            continue;
        };
        let key = (resource.as_str(), *fence, worker.as_str());
        let last_deadline_ms = extended
            .get(&key)
            .map_or(*deadline_ms, |extended| (*extended).max(*deadline_ms));
        let end_ms = match releases.get(&key) {
            Some((at, false)) if !lost.contains(&key) => *at,
            _ => last_deadline_ms,
        };
        let epoch = epochs.iter().filter(|e| **e <= *start_ms).count();
        let straddles = epochs
            .iter()
            .any(|e| *e > *start_ms && *e <= end_ms.max(*reply_ms));
        if straddles {
            continue;
        }
        out.entry((resource.clone(), epoch))
            .or_default()
            .push(Guard {
                grant: event,
                fence: *fence,
                start_ms: *start_ms,
                reply_ms: *reply_ms,
                end_ms,
            });
    }
    out
}

fn fence_order(guards: &[Guard<'_>], violations: &mut Vec<Violation>) {
    let mut by_fence: HashMap<u64, &Guard<'_>> = HashMap::new();
    for guard in guards {
        if let Some(other) = by_fence.insert(guard.fence, guard) {
            violations.push(Violation {
                rule: "fence_order",
                message: format!("fence {} granted twice in one epoch", guard.fence),
                evidence: evidence(&[other.grant, guard.grant]),
            });
        }
    }
    // Grants in reply order with a running maximum of fences: every grant asked for after a
    // reply must have a higher fence than everything replied before.
    let mut by_reply: Vec<&Guard<'_>> = guards.iter().collect();
    by_reply.sort_by_key(|g| g.reply_ms);
    let mut prefix_max: Vec<&Guard<'_>> = Vec::with_capacity(by_reply.len());
    for guard in &by_reply {
        let best = match prefix_max.last() {
            Some(prev) if prev.fence >= guard.fence => *prev,
            _ => *guard,
        };
        prefix_max.push(best);
    }
    for guard in guards {
        let before = by_reply.partition_point(|g| g.reply_ms < guard.start_ms);
        if before == 0 {
            continue;
        }
        let max = prefix_max[before - 1];
        if max.fence > guard.fence {
            violations.push(Violation {
                rule: "fence_order",
                message: format!(
                    "fence {} was granted after fence {} had come back",
                    guard.fence, max.fence
                ),
                evidence: evidence(&[max.grant, guard.grant]),
            });
        }
    }
}

fn window_overlap(guards: &[Guard<'_>], drift_ms: u64, violations: &mut Vec<Violation>) {
    let mut by_fence: Vec<&Guard<'_>> = guards.iter().collect();
    by_fence.sort_by_key(|g| g.fence);
    let mut latest: Option<&Guard<'_>> = None;
    for guard in by_fence {
        if let Some(prev) = latest
            && prev.fence < guard.fence
            && prev.end_ms > guard.reply_ms + drift_ms
        {
            violations.push(Violation {
                rule: "window_overlap",
                message: format!(
                    "fence {} was valid until {} but fence {} was granted by {} ({} ms overlap)",
                    prev.fence,
                    prev.end_ms,
                    guard.fence,
                    guard.reply_ms,
                    prev.end_ms - guard.reply_ms
                ),
                evidence: evidence(&[prev.grant, guard.grant]),
            });
        }
        if latest.is_none_or(|prev| guard.end_ms > prev.end_ms) {
            latest = Some(guard);
        }
    }
}

fn commit_fence_order(outcomes: &[OutcomeRow], violations: &mut Vec<Violation>) {
    let mut by_product: BTreeMap<i32, Vec<&OutcomeRow>> = BTreeMap::new();
    for row in outcomes {
        if let (Some(product), Some(_)) = (row.product, row.fence) {
            by_product.entry(product).or_default().push(row);
        }
    }
    for rows in by_product.values_mut() {
        rows.sort_by_key(|r| r.decided_us);
        // Running maximum over commits that started strictly earlier.
        let mut max: Option<&OutcomeRow> = None;
        let mut i = 0;
        while i < rows.len() {
            let mut j = i;
            while j < rows.len() && rows[j].decided_us == rows[i].decided_us {
                j += 1;
            }
            for row in &rows[i..j] {
                if let Some(prev) = max
                    && prev.fence > row.fence
                {
                    violations.push(Violation {
                        rule: "commit_fence_order",
                        message: format!(
                            "order {} committed under fence {:?} after a commit under fence {:?}",
                            row.id, row.fence, prev.fence
                        ),
                        evidence: evidence(&[prev, *row]),
                    });
                }
            }
            for row in &rows[i..j] {
                if max.is_none_or(|prev| row.fence > prev.fence) {
                    max = Some(row);
                }
            }
            i = j;
        }
    }
}

fn read_under_fence(history: &[Event], outcomes: &[OutcomeRow], violations: &mut Vec<Violation>) {
    let claims: HashSet<(i32, u64, &str)> = history
        .iter()
        .filter_map(|event| match event {
            Event::Claim {
                product,
                fence,
                worker,
                ..
            } => Some((*product, *fence, worker.as_str())),
            _ => None,
        })
        .collect();
    for row in outcomes {
        let (Some(product), Some(fence), Some(worker)) = (row.product, row.fence, &row.worker)
        else {
            continue;
        };
        if !claims.contains(&(product, fence, worker.as_str())) {
            violations.push(Violation {
                rule: "read_under_fence",
                message: format!(
                    "order {} committed under fence {fence} by {worker} without a claim under it",
                    row.id
                ),
                evidence: evidence(&[row]),
            });
        }
    }
}

fn one_outcome(history: &[Event], state: &FinalState, violations: &mut Vec<Violation>) {
    let mut rows: HashMap<&str, usize> = HashMap::new();
    for row in &state.outcomes {
        *rows.entry(row.id.as_str()).or_default() += 1;
    }
    let mut produced: HashSet<&str> = HashSet::new();
    // A garbage message pushed k times since Redis last lost its data (a producer retry pushes
    // it again, and each copy is unreadable on its own) has between 1 and k dead letters.
    let last_epoch = history
        .iter()
        .filter_map(|event| match event {
            Event::Epoch { at_ms } => Some(*at_ms),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    let mut garbage_pushes: HashMap<&str, usize> = HashMap::new();
    for event in history {
        if let Event::Produced {
            id,
            valid: false,
            at_ms,
            ..
        } = event
            && *at_ms >= last_epoch
        {
            *garbage_pushes.entry(id.as_str()).or_default() += 1;
        }
    }
    let mut garbage_seen: HashSet<&str> = HashSet::new();
    for event in history {
        let Event::Produced { id, valid, .. } = event else {
            continue;
        };
        if *valid {
            if produced.insert(id) && rows.get(id.as_str()).copied().unwrap_or(0) != 1 {
                violations.push(Violation {
                    rule: "one_outcome",
                    message: format!(
                        "order {id} has {} outcome rows",
                        rows.get(id.as_str()).copied().unwrap_or(0)
                    ),
                    evidence: evidence(&[event]),
                });
            }
        } else if garbage_seen.insert(id) {
            let letters = state
                .dead_letters
                .iter()
                .filter(|p| p.contains(id.as_str()))
                .count();
            let pushes = garbage_pushes.get(id.as_str()).copied().unwrap_or(0).max(1);
            if letters == 0 || letters > pushes {
                violations.push(Violation {
                    rule: "one_outcome",
                    message: format!("garbage message {id} has {letters} dead letters"),
                    evidence: evidence(&[event]),
                });
            }
        }
    }
    for row in &state.outcomes {
        if !produced.contains(row.id.as_str()) {
            violations.push(Violation {
                rule: "one_outcome",
                message: format!("outcome for order {} that was never produced", row.id),
                evidence: evidence(&[row]),
            });
        }
    }
}

fn stock_balance(state: &FinalState, violations: &mut Vec<Violation>) {
    for &(product, initial, final_stock) in &state.products {
        let sold: i64 = state
            .outcomes
            .iter()
            .filter(|r| r.product == Some(product) && r.status == "fulfilled")
            .map(|r| i64::from(r.quantity.unwrap_or(0)))
            .sum();
        if i64::from(initial) - sold != i64::from(final_stock) || final_stock < 0 {
            violations.push(Violation {
                rule: "stock_balance",
                message: format!(
                    "product {product}: initial {initial} − fulfilled {sold} ≠ final {final_stock} (or negative)"
                ),
                evidence: Vec::new(),
            });
        }
    }
}

fn rejected_with_stock(state: &FinalState, violations: &mut Vec<Violation>) {
    let finals: HashMap<i32, i32> = state.products.iter().map(|&(p, _, f)| (p, f)).collect();
    for row in &state.outcomes {
        if row.reason.as_deref() != Some("out_of_stock") {
            continue;
        }
        let (Some(product), Some(quantity)) = (row.product, row.quantity) else {
            continue;
        };
        if let Some(&stock) = finals.get(&product)
            && quantity <= stock
        {
            violations.push(Violation {
                rule: "rejected_with_stock",
                message: format!(
                    "order {} for {quantity} rejected out of stock, yet {stock} were left at the end",
                    row.id
                ),
                evidence: evidence(&[row]),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(fence: u64, worker: &str, start: u64, reply: u64, deadline: u64) -> Event {
        Event::Grant {
            resource: "product:1".into(),
            fence,
            worker: worker.into(),
            start_ms: start,
            reply_ms: reply,
            deadline_ms: deadline,
        }
    }

    fn release(fence: u64, worker: &str, at: u64, lost: bool) -> Event {
        Event::Release {
            resource: "product:1".into(),
            fence,
            worker: worker.into(),
            at_ms: at,
            lost,
        }
    }

    fn extend(fence: u64, worker: &str, at: u64, deadline: u64) -> Event {
        Event::Extend {
            resource: "product:1".into(),
            fence,
            worker: worker.into(),
            at_ms: at,
            deadline_ms: deadline,
        }
    }

    fn claim(fence: u64, worker: &str) -> Event {
        Event::Claim {
            product: 1,
            fence,
            worker: worker.into(),
            stock: 10,
            at_ms: 0,
        }
    }

    fn produced(id: &str, valid: bool) -> Event {
        Event::Produced {
            id: id.into(),
            product: 1,
            quantity: 1,
            valid,
            at_ms: 0,
        }
    }

    fn row(id: &str, status: &str, fence: u64, worker: &str, decided_us: i64) -> OutcomeRow {
        OutcomeRow {
            id: id.into(),
            product: Some(1),
            quantity: Some(1),
            status: status.into(),
            reason: (status == "rejected").then(|| "out_of_stock".to_owned()),
            fence: Some(fence),
            worker: Some(worker.into()),
            decided_us,
        }
    }

    fn rules(violations: &[Violation]) -> Vec<&'static str> {
        violations.iter().map(|v| v.rule).collect()
    }

    /// A clean history: two grants in order, each claimed and committed, stock balanced.
    fn clean() -> (Vec<Event>, FinalState) {
        let history = vec![
            produced("a", true),
            produced("b", true),
            produced("g1", false),
            grant(1, "w1", 0, 5, 100),
            claim(1, "w1"),
            release(1, "w1", 50, false),
            grant(2, "w2", 10, 55, 150),
            claim(2, "w2"),
            release(2, "w2", 80, false),
        ];
        let state = FinalState {
            products: vec![(1, 1, 0)],
            outcomes: vec![
                row("a", "fulfilled", 1, "w1", 20),
                row("b", "rejected", 2, "w2", 60),
            ],
            dead_letters: vec![r#"{"junk":"g1"}"#.into()],
            in_flight: 0,
        };
        (history, state)
    }

    #[test]
    fn a_clean_history_passes() {
        let (history, state) = clean();
        assert_eq!(check(&history, &state, 0), Vec::new());
    }

    #[test]
    fn a_lower_fence_granted_after_a_higher_one_came_back_fails_fence_order() {
        let (mut history, state) = clean();
        history.push(grant(1, "w3", 200, 205, 300));
        let found = check(&history, &state, 0);
        assert!(rules(&found).contains(&"fence_order"), "{found:?}");
        // ...but not across a Redis epoch (data lost: the counter restarts by design).
        let (mut history, state) = clean();
        history.push(Event::Epoch { at_ms: 190 });
        history.push(grant(1, "w3", 200, 205, 300));
        assert_eq!(check(&history, &state, 0), Vec::new());
    }

    #[test]
    fn overlapping_windows_fail_window_overlap_beyond_the_drift() {
        let (mut history, state) = clean();
        // w1 keeps fence 1 valid until 70, but fence 2 came back at 55.
        history[5] = release(1, "w1", 70, false);
        assert_eq!(rules(&check(&history, &state, 0)), vec!["window_overlap"]);
        assert_eq!(check(&history, &state, 20), Vec::new());
        // A lost guard's window ends at its grant deadline (100 > 55): also an overlap.
        history[5] = release(1, "w1", 400, true);
        assert_eq!(rules(&check(&history, &state, 0)), vec!["window_overlap"]);
    }

    /// A lost guard's window ends at its last extension's deadline, not at its first.
    #[test]
    fn an_extended_lost_guard_overlapping_a_later_grant_fails_window_overlap() {
        // w1's fence 1 runs to 40 unextended; fence 2 comes back at 55: no overlap.
        let history = vec![
            grant(1, "w1", 0, 5, 40),
            release(1, "w1", 400, true),
            grant(2, "w2", 10, 55, 150),
        ];
        let state = FinalState::default();
        assert_eq!(check(&history, &state, 0), Vec::new());
        // Extended to 90 before it was lost: valid past fence 2's grant.
        let mut extended = history.clone();
        extended.insert(1, extend(1, "w1", 30, 90));
        let found = check(&extended, &state, 0);
        assert_eq!(rules(&found), vec!["window_overlap"], "{found:?}");
        assert!(found[0].message.contains("valid until 90"), "{found:?}");
        // Never released (the worker died): the same.
        extended.remove(2);
        assert_eq!(rules(&check(&extended, &state, 0)), vec!["window_overlap"]);
        // Released before its deadline but after a lost signal: the deadline, not the release.
        let mut lost = vec![
            grant(1, "w1", 0, 5, 40),
            extend(1, "w1", 30, 90),
            release(1, "w1", 20, false),
            grant(2, "w2", 10, 55, 150),
        ];
        assert_eq!(check(&lost, &state, 0), Vec::new());
        lost.insert(
            2,
            Event::Lost {
                resource: "product:1".into(),
                fence: 1,
                worker: "w1".into(),
                at_ms: 15,
                why: "extension found the hold gone".into(),
            },
        );
        assert_eq!(rules(&check(&lost, &state, 0)), vec!["window_overlap"]);
    }

    #[test]
    fn a_commit_under_a_lower_fence_after_a_higher_one_fails() {
        let (history, mut state) = clean();
        state.outcomes[1].fence = Some(1);
        state.outcomes[1].worker = Some("w1".into());
        assert_eq!(check(&history, &state, 0), Vec::new());
        let (history, mut state) = clean();
        state.outcomes[0].decided_us = 100; // fence 1 commits after fence 2
        assert_eq!(
            rules(&check(&history, &state, 0)),
            vec!["commit_fence_order"]
        );
    }

    #[test]
    fn a_commit_without_a_claim_under_its_fence_fails() {
        let (mut history, state) = clean();
        history.retain(|e| !matches!(e, Event::Claim { fence: 2, .. }));
        assert_eq!(rules(&check(&history, &state, 0)), vec!["read_under_fence"]);
    }

    #[test]
    fn a_missing_or_extra_outcome_or_dead_letter_fails_one_outcome() {
        let (history, mut state) = clean();
        state.outcomes[1].id = "x".into();
        let found = check(&history, &state, 0);
        assert_eq!(
            rules(&found),
            vec!["one_outcome", "one_outcome"],
            "{found:?}"
        );
        let (history, mut state) = clean();
        state.dead_letters.push(r#"{"junk":"g1"}"#.into());
        assert_eq!(rules(&check(&history, &state, 0)), vec!["one_outcome"]);
    }

    /// A garbage message the producer pushed twice may dead-letter twice, never three times;
    /// pushes before Redis lost its data (and its dead letters) do not count.
    #[test]
    fn a_garbage_message_pushed_again_may_dead_letter_once_per_push() {
        let (mut history, mut state) = clean();
        let garbage = history
            .iter()
            .find(|e| matches!(e, Event::Produced { valid: false, .. }))
            .cloned()
            .unwrap();
        history.push(garbage.clone());
        state.dead_letters.push(r#"{"junk":"g1"}"#.into());
        assert!(rules(&check(&history, &state, 0)).is_empty());
        state.dead_letters.push(r#"{"junk":"g1"}"#.into());
        assert_eq!(rules(&check(&history, &state, 0)), vec!["one_outcome"]);
        // Both pushes before a wipe: one dead letter at most after it.
        history.push(Event::Epoch { at_ms: u64::MAX });
        state.dead_letters.pop();
        assert_eq!(rules(&check(&history, &state, 0)), vec!["one_outcome"]);
    }

    #[test]
    fn unbalanced_or_negative_stock_fails() {
        let (history, mut state) = clean();
        state.products = vec![(1, 1, 1)];
        let found = rules(&check(&history, &state, 0));
        assert!(found.contains(&"stock_balance"), "{found:?}");
        let (history, mut state) = clean();
        state.products = vec![(1, 0, -1)];
        assert_eq!(rules(&check(&history, &state, 0)), vec!["stock_balance"]);
    }

    #[test]
    fn a_rejection_while_stock_covered_it_fails() {
        let (history, mut state) = clean();
        state.products = vec![(1, 2, 1)];
        assert_eq!(
            rules(&check(&history, &state, 0)),
            vec!["rejected_with_stock"]
        );
    }

    #[test]
    fn messages_left_in_flight_fail() {
        let (history, mut state) = clean();
        state.in_flight = 2;
        assert_eq!(rules(&check(&history, &state, 0)), vec!["in_flight"]);
    }
}
