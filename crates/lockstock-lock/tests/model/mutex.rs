//! The single-instance mutex as a [`stateright::Model`]: Redis (lock key, fence counter, FIFO
//! wait queue with waiter leases, pub/sub hand-off messages), the clients' acquire / wait /
//! extend / release loops with their guard deadlines, and the database's fenced claim + commit.
//!
//! Everything is discrete: one server clock in ticks (`now`), every client's monotonic clock
//! reads the same ticks (rate error is folded into `drift`, see [`Config::drift`]).

use std::fmt;

use stateright::{Model, Property};

/// Which hardening fixes the modelled protocol has. All on = the specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Fixes {
    /// Hole 1: a hand-off message whose server time is older than the latest server time the
    /// waiter has already seen in a reply is discarded, never turned into a guard.
    pub(crate) discard_stale_handoff: bool,
    /// Hole 6: queueing is keyed by token, so a retried queueing call (its first reply lost)
    /// renews the existing entry instead of pushing a second one.
    pub(crate) idempotent_requeue: bool,
    /// Hole 7: a queue entry carries a lease (renewed by every call of the waiter) instead of
    /// living for the waiter's whole wait, and a hand-off grants at most one lease of TTL.
    pub(crate) waiter_lease: bool,
}

impl Fixes {
    /// Every fix on: the protocol as it must be.
    pub(crate) const ALL: Fixes = Fixes {
        discard_stale_handoff: true,
        idempotent_requeue: true,
        waiter_lease: true,
    };
}

/// The bounds and parameters of one check.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Number of clients (each acquires the one resource once, works under it, releases).
    pub(crate) clients: u8,
    /// Lock TTL in ticks.
    pub(crate) ttl: u8,
    /// Waiter lease in ticks (with [`Fixes::waiter_lease`]).
    pub(crate) lease: u8,
    /// Drift allowance subtracted from every guard deadline; Redis may also expire a key up to
    /// this many ticks early (a clock-rate error of that size between server and client).
    pub(crate) drift: u8,
    /// The server clock stops here: every path is at most this long in time.
    pub(crate) horizon: u8,
    /// How many client pauses (stop-the-world, time goes on) may happen in one run.
    pub(crate) pauses: u8,
    /// How many losses (a request or a reply to a Redis/DB call, or a pub/sub message) may happen.
    pub(crate) losses: u8,
    /// How many pub/sub messages may be delivered twice.
    pub(crate) duplicates: u8,
    /// How many clients may crash (stop for good).
    pub(crate) crashes: u8,
    /// How many Redis restarts that lose every key (each may be followed by the fence-floor repair).
    pub(crate) restarts: u8,
    /// Whether holders may extend (at most once per hold).
    pub(crate) extends: bool,
    /// The fixes in force.
    pub(crate) fixes: Fixes,
}

/// A waiter's entry lives this long without [`Fixes::waiter_lease`]: the whole wait.
const WHOLE_WAIT: u8 = u8::MAX;

/// A call a client makes (to Redis or to the database).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Op {
    /// `acquire.lua` (take, or join / renew the queue).
    Acquire,
    /// `extend.lua`.
    Extend,
    /// `release.lua` (hand-off to the oldest live waiter).
    Release,
    /// The database claim: raise `last_fence` to the token and read the stock, one statement.
    Claim,
    /// The database commit of `read - 1`, only `WHERE last_fence = fence`.
    Commit { read: u8 },
}

/// What the holder does next under its guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Work {
    Claim,
    Commit { read: u8 },
    Release,
}

/// A client's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Phase {
    /// Not started.
    Idle,
    /// In the acquire loop with `token`. `seen`: the latest (send instant, server time) pair of a
    /// "held by another" reply; `entry_known`: the client has its queue entry from a reply.
    Waiting {
        token: u8,
        started: u8,
        seen: Option<(u8, u8)>,
        entry_known: bool,
    },
    /// Holds a guard.
    Holding {
        token: u8,
        fence: u8,
        /// Local instant the guard stops being valid (exclusive).
        deadline: u8,
        /// The Redis epoch it was granted in.
        epoch: u8,
        /// An extension found the lock gone: the lost signal fired.
        lost: bool,
        extended: bool,
        work: Work,
    },
    /// Released (or gave the guard up): finished.
    Done,
}

/// One client process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Client {
    pub(crate) phase: Phase,
    /// A call whose request or reply was lost: the client waits for its response timeout.
    pub(crate) awaiting: Option<Op>,
    pub(crate) paused: bool,
    /// `Some(t)`: crashed at tick `t` (takes no steps ever again).
    pub(crate) died: Option<u8>,
}

/// The lock key's value and expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Lock {
    pub(crate) token: u8,
    pub(crate) fence: u8,
    /// Server tick at which the key expires (exclusive).
    pub(crate) expires: u8,
    /// The waiters mark ("+w" in the value): a waiter queued behind this hold, so its release
    /// looks at the queue; an unmarked hold is released by `GETDEL` alone.
    pub(crate) marked: bool,
}

/// A wait-queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) token: u8,
    /// Server tick the entry counts as alive until (exclusive).
    pub(crate) expires: u8,
}

/// A published hand-off `token\nfence\nserver_ms\nttl_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Message {
    pub(crate) token: u8,
    pub(crate) fence: u8,
    pub(crate) handed_at: u8,
    pub(crate) ttl: u8,
    /// Ghost: the Redis epoch of the hand-off (a guard built from it belongs to that epoch).
    pub(crate) epoch: u8,
}

/// The protected database row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Db {
    pub(crate) last_fence: u8,
    pub(crate) stock: u8,
    /// Ghost: the highest fence of any accepted write (claim or commit).
    pub(crate) max_accepted: u8,
}

/// Ghost bookkeeping for the properties (never read by the protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub(crate) struct Ghost {
    /// The last fence granted in the current Redis epoch (0: none yet).
    pub(crate) last_grant: u8,
    /// Violations seen in a transition, one bit per [`Violation`].
    pub(crate) violations: u8,
    /// Hand-offs so far (saturates at 2).
    pub(crate) handoffs: u8,
    /// Commits the database accepted (saturates at 2).
    pub(crate) commits: u8,
    /// A claim was refused for a stale fence.
    pub(crate) stale_refused: bool,
    /// A commit was accepted in a Redis epoch after a restart whose floor was repaired.
    pub(crate) commit_after_repair: bool,
}

/// Transition-level violations, recorded in [`Ghost::violations`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Violation {
    /// A grant's fence did not exceed the previous grant's in the same Redis epoch.
    FenceNotIncreasing = 1,
    /// The database accepted a write with a fence below one it accepted before.
    DbFenceWentBack = 2,
    /// The database accepted a commit whose read was not the current value (a lost update).
    DbLostUpdate = 4,
    /// A hand-off went to a client not waiting on that token (finished, or dead for a lease).
    HandoffToNonWaiter = 8,
    /// A hand-off to a dead client granted more than one lease.
    DeadWaiterHeldPastLease = 16,
    /// A release skipped past (or freed the lock despite) a live waiter that keeps its lease,
    /// handing the lock to nobody who will use it within a lease.
    LiveWaiterNotServed = 32,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct State {
    pub(crate) now: u8,
    pub(crate) clients: Vec<Client>,
    pub(crate) lock: Option<Lock>,
    pub(crate) counter: u8,
    pub(crate) queue: Vec<Entry>,
    /// In flight, sorted (delivery in any order).
    pub(crate) messages: Vec<Message>,
    pub(crate) db: Db,
    /// Redis data-loss restarts so far; also the epoch number.
    pub(crate) epoch: u8,
    /// Whether the fence floor was raised since the last restart.
    pub(crate) repaired: bool,
    pub(crate) pauses_left: u8,
    pub(crate) losses_left: u8,
    pub(crate) duplicates_left: u8,
    pub(crate) crashes_left: u8,
    pub(crate) ghost: Ghost,
}

/// Every step of the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    /// The server clock advances one tick.
    Tick,
    /// The client makes a call and the server (Redis or the database) runs it at once; the
    /// reply arrives. (A slow request is a pause of the client before it; a slow reply, one after.)
    Call(u8, Op),
    /// The client makes a call whose request is lost: it never runs.
    LoseRequest(u8, Op),
    /// The client makes a call that runs, but the reply is lost.
    LoseReply(u8, Op),
    /// The client stops waiting for a call whose request or reply was lost.
    TimeOut(u8),
    /// A hand-off message is delivered to its client.
    Deliver(Message),
    /// A hand-off message is lost.
    LoseMessage(Message),
    /// A hand-off message is duplicated in flight.
    DuplicateMessage(Message),
    Pause(u8),
    Resume(u8),
    Crash(u8),
    /// Redis expires the lock key (at most `drift` ticks early).
    Expire,
    /// Redis restarts and loses every key (lock, counter, queue).
    Restart,
    /// The operator raises the fence counter to the database's high-water mark.
    RaiseFloor,
}

/// The model: a configuration.
#[derive(Clone, Debug)]
pub(crate) struct MutexModel {
    pub(crate) cfg: Config,
}

impl MutexModel {
    fn owner(token: u8) -> usize {
        token as usize
    }

    fn live_lock(&self, s: &State) -> Option<Lock> {
        s.lock.filter(|l| s.now < l.expires)
    }

    /// Whether the client holds a guard valid right now (the property-1 notion).
    pub(crate) fn guard_valid(s: &State, c: &Client) -> bool {
        matches!(c.phase, Phase::Holding { deadline, epoch, lost, work, .. }
            if !lost && epoch == s.epoch && s.now < deadline
                && !(work == Work::Release && c.awaiting.is_some()))
    }

    fn entry_expiry(&self, now: u8) -> u8 {
        if self.cfg.fixes.waiter_lease {
            now + self.cfg.lease
        } else {
            WHOLE_WAIT
        }
    }

    fn handoff_ttl(&self) -> u8 {
        if self.cfg.fixes.waiter_lease {
            self.cfg.ttl.min(self.cfg.lease)
        } else {
            self.cfg.ttl
        }
    }

    fn grant(&self, s: &mut State, token: u8, ttl: u8, marked: bool) -> u8 {
        s.counter += 1;
        let fence = s.counter;
        if fence <= s.ghost.last_grant {
            s.ghost.violations |= Violation::FenceNotIncreasing as u8;
        }
        s.ghost.last_grant = fence;
        s.lock = Some(Lock {
            token,
            fence,
            expires: s.now + ttl,
            marked,
        });
        fence
    }

    /// Whether client `c` is a live waiter on `token` (alive, in its acquire loop with it).
    fn waiting_on(c: &Client, token: u8) -> bool {
        c.died.is_none() && matches!(c.phase, Phase::Waiting { token: t, .. } if t == token)
    }

    /// `acquire.lua` for `token` (the fixed or the real variant).
    fn run_acquire(&self, s: &mut State, token: u8, entry_known: bool) -> Reply {
        let fixes = self.cfg.fixes;
        let now = s.now;
        if let Some(lock) = self.live_lock(s) {
            if lock.token == token {
                return Reply::Acquired {
                    fence: lock.fence,
                    pttl: lock.expires - now,
                };
            }
            let existing = s.queue.iter().position(|e| e.token == token);
            let push = if fixes.idempotent_requeue {
                existing.is_none()
            } else {
                // The real script pushes whenever the caller passes no entry string.
                !entry_known
            };
            if push {
                let expires = self.entry_expiry(now);
                s.queue.push(Entry { token, expires });
            } else if let (true, Some(i)) = (fixes.waiter_lease, existing) {
                s.queue[i].expires = now + self.cfg.lease;
            }
            // A queueing call marks the hold it waits behind.
            s.lock = Some(Lock {
                marked: true,
                ..lock
            });
            return Reply::Held { server: now };
        }
        // Free: take it; leave the queue.
        if fixes.idempotent_requeue {
            s.queue.retain(|e| e.token != token);
        } else if entry_known && let Some(i) = s.queue.iter().position(|e| e.token == token) {
            s.queue.remove(i);
        }
        // Marked when others are still queued behind the new hold.
        let marked = !s.queue.is_empty();
        let ttl = self.cfg.ttl;
        let fence = self.grant(s, token, ttl, marked);
        Reply::Acquired { fence, pttl: ttl }
    }

    /// `release.lua` for `token`.
    fn run_release(&self, s: &mut State, token: u8) {
        let Some(lock) = self.live_lock(s) else {
            return;
        };
        if lock.token != token {
            return;
        }
        let now = s.now;
        let lease = self.cfg.lease;
        // Ghost: is a live waiter that keeps its lease queued right now?
        let live_waiter_queued = s.queue.iter().any(|e| {
            e.expires > now && Self::waiting_on(&s.clients[Self::owner(e.token)], e.token)
        });
        // An unmarked hold is released by GETDEL alone: the queue is not looked at.
        while lock.marked && !s.queue.is_empty() {
            let entry = s.queue.remove(0);
            if entry.expires <= now {
                continue;
            }
            let ttl = self.handoff_ttl();
            let fence = self.grant(s, entry.token, ttl, true);
            let message = Message {
                token: entry.token,
                fence,
                handed_at: now,
                ttl,
                epoch: s.epoch,
            };
            insert_sorted(&mut s.messages, message);
            s.ghost.handoffs = (s.ghost.handoffs + 1).min(2);
            let target = &s.clients[Self::owner(entry.token)];
            let usable = match target.died {
                None => Self::waiting_on(target, entry.token),
                Some(died) => now < died.saturating_add(lease),
            };
            if !usable {
                s.ghost.violations |= Violation::HandoffToNonWaiter as u8;
                if live_waiter_queued {
                    s.ghost.violations |= Violation::LiveWaiterNotServed as u8;
                }
            }
            if target.died.is_some() && ttl > lease {
                s.ghost.violations |= Violation::DeadWaiterHeldPastLease as u8;
            }
            return;
        }
        s.lock = None;
        if live_waiter_queued {
            s.ghost.violations |= Violation::LiveWaiterNotServed as u8;
        }
    }
}

/// A call's answer as the client sees it.
#[derive(Clone, Copy, Debug)]
enum Reply {
    Acquired { fence: u8, pttl: u8 },
    Held { server: u8 },
    Extended(bool),
    Claimed(u8),
    Committed,
    Refused,
    Released,
}

fn insert_sorted(messages: &mut Vec<Message>, m: Message) {
    let at = messages.partition_point(|x| *x <= m);
    messages.insert(at, m);
}

impl Model for MutexModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let cfg = &self.cfg;
        vec![State {
            now: 0,
            clients: vec![
                Client {
                    phase: Phase::Idle,
                    awaiting: None,
                    paused: false,
                    died: None,
                };
                cfg.clients as usize
            ],
            lock: None,
            counter: 0,
            queue: Vec::new(),
            messages: Vec::new(),
            db: Db {
                last_fence: 0,
                stock: cfg.clients,
                max_accepted: 0,
            },
            epoch: 0,
            repaired: false,
            pauses_left: cfg.pauses,
            losses_left: cfg.losses,
            duplicates_left: cfg.duplicates,
            crashes_left: cfg.crashes,
            ghost: Ghost::default(),
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        // Once a violation is recorded the path is a counterexample: stop exploring it.
        if s.ghost.violations != 0 {
            return;
        }
        if s.now < self.cfg.horizon {
            actions.push(Action::Tick);
        }
        for (i, c) in s.clients.iter().enumerate() {
            let i = i as u8;
            if c.died.is_some() {
                continue;
            }
            if c.paused {
                actions.push(Action::Resume(i));
                continue;
            }
            if c.awaiting.is_some() {
                actions.push(Action::TimeOut(i));
            }
            if s.pauses_left > 0 && c.phase != Phase::Done && c.phase != Phase::Idle {
                actions.push(Action::Pause(i));
            }
            if s.crashes_left > 0 && matches!(c.phase, Phase::Waiting { .. }) {
                actions.push(Action::Crash(i));
            }
            if c.awaiting.is_some() {
                continue;
            }
            // Clients are alike: client i starts only after client i - 1 did (symmetry).
            if c.phase == Phase::Idle && i > 0 && s.clients[i as usize - 1].phase == Phase::Idle {
                continue;
            }
            for op in self.next_ops(c).into_iter().flatten() {
                actions.push(Action::Call(i, op));
                if s.losses_left > 0 {
                    actions.push(Action::LoseRequest(i, op));
                    actions.push(Action::LoseReply(i, op));
                }
            }
        }
        for m in dedup(&s.messages) {
            let c = &s.clients[Self::owner(m.token)];
            let can_take = c.died.is_none() && !c.paused && c.awaiting.is_none();
            if can_take {
                actions.push(Action::Deliver(m));
            }
            if s.losses_left > 0 {
                actions.push(Action::LoseMessage(m));
            }
            if s.duplicates_left > 0 {
                actions.push(Action::DuplicateMessage(m));
            }
        }
        if let Some(lock) = s.lock
            && s.now + self.cfg.drift >= lock.expires
        {
            actions.push(Action::Expire);
        }
        if s.epoch < self.cfg.restarts && s.now < self.cfg.horizon {
            actions.push(Action::Restart);
        }
        if s.epoch > 0 && !s.repaired {
            actions.push(Action::RaiseFloor);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        let drift = self.cfg.drift;
        match action {
            Action::Tick => {
                s.now += 1;
                if s.lock.is_some_and(|l| s.now >= l.expires) {
                    s.lock = None;
                }
            }
            Action::Call(i, op) | Action::LoseReply(i, op) => {
                if matches!(action, Action::LoseReply(..)) {
                    s.losses_left -= 1;
                    s.clients[i as usize].awaiting = Some(op);
                }
                start_if_idle(&mut s, i);
                let c = s.clients[i as usize];
                let reply = self.run_call(&mut s, &c, op);
                if c.awaiting.is_none() {
                    self.apply_reply(&mut s, i as usize, reply);
                }
            }
            Action::LoseRequest(i, op) => {
                s.losses_left -= 1;
                start_if_idle(&mut s, i);
                s.clients[i as usize].awaiting = Some(op);
            }
            Action::TimeOut(i) => {
                let c = &mut s.clients[i as usize];
                let op = c.awaiting.take()?;
                // A lost release or a lost database reply: the guard is given up (the worker
                // aborts; the TTL frees the lock). A lost acquire or extend: retried later.
                match (op, &mut c.phase) {
                    (Op::Release, phase) => *phase = Phase::Done,
                    (Op::Claim | Op::Commit { .. }, Phase::Holding { work, .. }) => {
                        *work = Work::Release
                    }
                    _ => {}
                }
            }
            Action::Deliver(m) => {
                remove_one(&mut s.messages, m);
                let now = s.now;
                let c = &mut s.clients[Self::owner(m.token)];
                if let Phase::Waiting {
                    token,
                    seen,
                    started,
                    ..
                } = c.phase
                    && token == m.token
                {
                    let base = match seen {
                        Some((sent, server)) => {
                            (sent + m.handed_at.saturating_sub(server)).min(now)
                        }
                        None => started,
                    };
                    let deadline = (base + m.ttl).saturating_sub(drift);
                    // Stale: handed over before a reply that already said "held by another",
                    // or so long ago that the guard would be born expired.
                    let stale =
                        seen.is_some_and(|(_, server)| m.handed_at < server) || deadline <= now;
                    if !(stale && self.cfg.fixes.discard_stale_handoff) {
                        c.phase = Phase::Holding {
                            token,
                            fence: m.fence,
                            deadline,
                            epoch: m.epoch,
                            lost: false,
                            extended: false,
                            work: Work::Claim,
                        };
                    }
                }
            }
            Action::LoseMessage(m) => {
                s.losses_left -= 1;
                remove_one(&mut s.messages, m);
            }
            Action::DuplicateMessage(m) => {
                s.duplicates_left -= 1;
                insert_sorted(&mut s.messages, m);
            }
            Action::Pause(i) => {
                s.pauses_left -= 1;
                s.clients[i as usize].paused = true;
            }
            Action::Resume(i) => s.clients[i as usize].paused = false,
            Action::Crash(i) => {
                s.crashes_left -= 1;
                let c = &mut s.clients[i as usize];
                c.died = Some(s.now);
                c.awaiting = None;
            }
            Action::Expire => s.lock = None,
            Action::Restart => {
                // A restart takes time: the server clock moves on by at least a tick.
                s.now += 1;
                s.epoch += 1;
                s.repaired = false;
                s.lock = None;
                s.counter = 0;
                s.queue.clear();
                s.ghost.last_grant = 0;
            }
            Action::RaiseFloor => {
                s.repaired = true;
                s.counter = s.counter.max(s.db.last_fence);
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        fn clean(s: &State, v: Violation) -> bool {
            s.ghost.violations & v as u8 == 0
        }
        let mut properties = vec![
            Property::always(P1_ONE_VALID_GUARD, |_, s: &State| {
                s.clients
                    .iter()
                    .filter(|c| MutexModel::guard_valid(s, c))
                    .count()
                    <= 1
            }),
            Property::always(P2_FENCES_INCREASE, |_, s: &State| {
                clean(s, Violation::FenceNotIncreasing)
            }),
            Property::always(P3_DB_FENCED, |_, s: &State| {
                clean(s, Violation::DbFenceWentBack) && clean(s, Violation::DbLostUpdate)
            }),
            Property::always(P4_LIVE_WAITER_SERVED, |_, s: &State| {
                clean(s, Violation::LiveWaiterNotServed)
            }),
            Property::always(P5_HANDOFF_TO_WAITER, |_, s: &State| {
                clean(s, Violation::HandoffToNonWaiter)
            }),
            Property::always(P6_DEAD_WAITER_LEASE, |_, s: &State| {
                clean(s, Violation::DeadWaiterHeldPastLease)
            }),
            Property::sometimes(S_TWO_HANDOFFS, |_, s: &State| s.ghost.handoffs >= 2),
            Property::sometimes(S_TWO_COMMITS, |_, s: &State| s.ghost.commits >= 2),
        ];
        if self.cfg.restarts > 0 {
            properties.push(Property::sometimes(S_STALE_REFUSED, |_, s: &State| {
                s.ghost.stale_refused
            }));
            properties.push(Property::sometimes(
                S_COMMIT_AFTER_REPAIR,
                |_, s: &State| s.ghost.commit_after_repair,
            ));
        }
        properties
    }
}

/// Property names (the tests look discoveries up by them).
pub(crate) const P1_ONE_VALID_GUARD: &str = "1: at most one valid guard (current Redis epoch)";
pub(crate) const P2_FENCES_INCREASE: &str =
    "2: fences strictly increase in grant order (per epoch)";
pub(crate) const P3_DB_FENCED: &str = "3: db accepts no older fence and no lost update";
pub(crate) const P4_LIVE_WAITER_SERVED: &str = "4: a release serves a live, leased waiter";
pub(crate) const P5_HANDOFF_TO_WAITER: &str =
    "5: hand-offs go only to waiting (or just-died) clients";
pub(crate) const P6_DEAD_WAITER_LEASE: &str =
    "6: a hand-off to a dead waiter lasts at most a lease";
pub(crate) const S_TWO_HANDOFFS: &str = "sometimes: two hand-offs";
pub(crate) const S_TWO_COMMITS: &str = "sometimes: two accepted commits";
pub(crate) const S_STALE_REFUSED: &str = "sometimes: the db refuses a stale claim";
pub(crate) const S_COMMIT_AFTER_REPAIR: &str = "sometimes: a commit after restart + floor repair";

impl MutexModel {
    /// The calls client `c` may make next.
    fn next_ops(&self, c: &Client) -> [Option<Op>; 2] {
        match c.phase {
            Phase::Idle | Phase::Waiting { .. } => [Some(Op::Acquire), None],
            Phase::Holding {
                work,
                extended,
                lost,
                ..
            } => {
                let next = match work {
                    Work::Claim => Op::Claim,
                    Work::Commit { read } => Op::Commit { read },
                    Work::Release => Op::Release,
                };
                let extend = (self.cfg.extends && !extended && !lost).then_some(Op::Extend);
                [Some(next), extend]
            }
            Phase::Done => [None, None],
        }
    }

    /// Runs `op` for client `c` on the server side.
    fn run_call(&self, s: &mut State, c: &Client, op: Op) -> Reply {
        match (op, c.phase) {
            (
                Op::Acquire,
                Phase::Waiting {
                    token, entry_known, ..
                },
            ) => self.run_acquire(s, token, entry_known),
            (Op::Extend, Phase::Holding { token, .. }) => match self.live_lock(s) {
                Some(lock) if lock.token == token => {
                    s.lock = Some(Lock {
                        expires: s.now + self.cfg.ttl,
                        ..lock
                    });
                    Reply::Extended(true)
                }
                _ => Reply::Extended(false),
            },
            (Op::Release, Phase::Holding { token, .. }) => {
                self.run_release(s, token);
                Reply::Released
            }
            (Op::Claim, Phase::Holding { fence, .. }) => {
                if fence > s.db.last_fence {
                    self.db_accept(s, fence);
                    s.db.last_fence = fence;
                    Reply::Claimed(s.db.stock)
                } else {
                    s.ghost.stale_refused = true;
                    Reply::Refused
                }
            }
            (Op::Commit { read }, Phase::Holding { fence, epoch, .. }) => {
                if s.db.last_fence == fence {
                    self.db_accept(s, fence);
                    if read != s.db.stock {
                        s.ghost.violations |= Violation::DbLostUpdate as u8;
                    }
                    s.db.stock = read.saturating_sub(1);
                    s.ghost.commits = (s.ghost.commits + 1).min(2);
                    if epoch > 0 && s.repaired {
                        s.ghost.commit_after_repair = true;
                    }
                    Reply::Committed
                } else {
                    Reply::Refused
                }
            }
            _ => unreachable!("a call {op:?} from phase {:?}", c.phase),
        }
    }

    fn db_accept(&self, s: &mut State, fence: u8) {
        if fence < s.db.max_accepted {
            s.ghost.violations |= Violation::DbFenceWentBack as u8;
        }
        s.db.max_accepted = s.db.max_accepted.max(fence);
    }

    /// The client's reaction to a reply to a call it sent at `now`.
    fn apply_reply(&self, s: &mut State, i: usize, reply: Reply) {
        let drift = self.cfg.drift;
        let sent = s.now;
        let epoch = s.epoch;
        let c = &mut s.clients[i];
        match (reply, &mut c.phase) {
            (Reply::Acquired { fence, pttl }, Phase::Waiting { token, .. }) => {
                c.phase = Phase::Holding {
                    token: *token,
                    fence,
                    deadline: (sent + pttl).saturating_sub(drift),
                    epoch,
                    lost: false,
                    extended: false,
                    work: Work::Claim,
                };
            }
            (
                Reply::Held { server },
                Phase::Waiting {
                    seen, entry_known, ..
                },
            ) => {
                *seen = Some((sent, server));
                *entry_known = true;
            }
            (
                Reply::Extended(ok),
                Phase::Holding {
                    deadline,
                    lost,
                    extended,
                    ..
                },
            ) => {
                *extended = true;
                if ok {
                    *deadline = (sent + self.cfg.ttl).saturating_sub(drift);
                } else {
                    *lost = true;
                }
            }
            (Reply::Claimed(read), Phase::Holding { work, .. }) => {
                *work = Work::Commit { read };
            }
            (Reply::Refused | Reply::Committed, Phase::Holding { work, .. }) => {
                *work = Work::Release;
            }
            (Reply::Released, _) => c.phase = Phase::Done,
            (reply, phase) => unreachable!("reply {reply:?} in phase {phase:?}"),
        }
    }
}

/// A client's first call starts its acquire loop, with its own token.
fn start_if_idle(s: &mut State, i: u8) {
    let now = s.now;
    let c = &mut s.clients[i as usize];
    if c.phase == Phase::Idle {
        c.phase = Phase::Waiting {
            token: i,
            started: now,
            seen: None,
            entry_known: false,
        };
    }
}

fn remove_one(messages: &mut Vec<Message>, m: Message) {
    if let Some(i) = messages.iter().position(|x| *x == m) {
        messages.remove(i);
    }
}

fn dedup(messages: &[Message]) -> Vec<Message> {
    let mut out = messages.to_vec();
    out.dedup();
    out
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} clients x 1 acquisition, ttl {}, lease {}, drift {}, horizon {} ticks, \
             pauses {}, losses {}, duplicates {}, crashes {}, restarts {}, extends {}, {:?}",
            self.clients,
            self.ttl,
            self.lease,
            self.drift,
            self.horizon,
            self.pauses,
            self.losses,
            self.duplicates,
            self.crashes,
            self.restarts,
            self.extends,
            self.fixes
        )
    }
}
