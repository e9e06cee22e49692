//! Group commit for fenced sales: the claims and commits of several product holds in one
//! transaction, so a worker deciding many products pays one Postgres commit for many of them.
//!
//! Each lock holder submits its step (a claim, or a batch commit) with the connection it took
//! before its lock. Up to [`SaleGroup::LEADERS`] submitters at a time become *leaders*: a leader
//! takes every waiting step (each product at most once), runs them on its own connection in one
//! statement per kind (claims first, then commits; one transaction when both kinds are there)
//! and hands each submitter its own result. While the leaders are busy, steps queue up, which
//! is what makes the groups: the busier Postgres is, the larger they get.
//!
//! - When a group runs, then every product in it is checked on its own, as if alone: its fence,
//!   its stock, its orders' freshness (`store/sale.rs`, `claim_products_on` and
//!   `commit_fenced_batches_on`). A product whose check fails gets the same refusal it would get
//!   alone and writes nothing; the others are written.
//! - When a grouped statement fails (Postgres error, lost connection), then every step of the
//!   group is run again on its own, so each submitter gets its own answer and one step's error
//!   never decides another's.
//! - A submitter never waits for a connection: it either waits for a leader's answer or leads
//!   with the connection it brought.
//! - When a leader is cancelled mid-group (its caller's deadline), then the other submitters of
//!   that group get a transient error and may retry; the group may or may not have committed (as
//!   with any lost reply: every write is idempotent by order id, and a claim is refused as stale
//!   when retried with the same token).
//! - When a submitter gives up before a leader takes its step, then the step is dropped unsent.
//! - Not guaranteed: fairness between submitters beyond first come, first taken.

use std::{
    collections::{HashSet, VecDeque},
    sync::Mutex,
};

use sqlx::{Connection, PgConnection};
use tokio::sync::{Semaphore, oneshot};

use crate::{
    order::ProductId,
    store::{BatchCommit, Claim, Decision, OrderStore, ProductBatch, StoreError},
};

/// One submitted step.
#[derive(Debug)]
enum Step {
    /// Register the fence on the product row and read its stock.
    Claim(Claim),
    /// Commit a product's decided orders under its fence.
    Commit {
        /// The product, its fence.
        claim: Claim,
        /// The decided orders.
        decisions: Vec<Decision>,
        /// The deciding worker, recorded on each row.
        worker: String,
    },
}

impl Step {
    /// The product the step is for.
    fn product(&self) -> ProductId {
        match self {
            Step::Claim(claim) | Step::Commit { claim, .. } => claim.product_id,
        }
    }
}

/// A step's answer.
#[derive(Debug)]
enum Answer {
    /// For [`Step::Claim`].
    Claimed(Result<i32, StoreError>),
    /// For [`Step::Commit`].
    Committed(Result<BatchCommit, StoreError>),
}

/// A step waiting for a leader, and where its answer goes.
#[derive(Debug)]
struct Waiting {
    step: Step,
    reply: oneshot::Sender<Answer>,
}

/// The group commit of one worker process (see the module docs).
#[derive(Debug)]
pub(crate) struct SaleGroup {
    /// Steps not yet taken by a leader, first come first.
    waiting: Mutex<VecDeque<Waiting>>,
    /// One permit per concurrent leader.
    leaders: Semaphore,
}

impl Default for SaleGroup {
    fn default() -> Self {
        Self::new(Self::LEADERS)
    }
}

impl SaleGroup {
    /// Default concurrent leaders: two groups in flight keep Postgres busy (one flushing its
    /// WAL while the other is sent) without splitting the waiting steps into small groups.
    pub(crate) const LEADERS: usize = 2;

    /// Most steps in one group: bounds a statement's size and a leader's time.
    const MAX_STEPS: usize = 256;

    /// A group with up to `leaders` groups in flight at once (at least one).
    pub(crate) fn new(leaders: usize) -> Self {
        Self {
            waiting: Mutex::new(VecDeque::new()),
            leaders: Semaphore::new(leaders.max(1)),
        }
    }

    /// [`OrderStore::claim_product_on`], grouped with other holders' steps.
    pub(crate) async fn claim(
        &self,
        store: &OrderStore,
        conn: &mut PgConnection,
        claim: Claim,
    ) -> Result<i32, StoreError> {
        match self.submit(store, conn, Step::Claim(claim)).await {
            Some(Answer::Claimed(result)) => result,
            Some(Answer::Committed(_)) => Err(mismatched()),
            None => Err(abandoned()),
        }
    }

    /// [`OrderStore::commit_fenced_batch_on`], grouped with other holders' steps.
    pub(crate) async fn commit(
        &self,
        store: &OrderStore,
        conn: &mut PgConnection,
        claim: Claim,
        decisions: Vec<Decision>,
        worker: &str,
    ) -> Result<BatchCommit, StoreError> {
        let step = Step::Commit {
            claim,
            decisions,
            worker: worker.to_owned(),
        };
        match self.submit(store, conn, step).await {
            Some(Answer::Committed(result)) => result,
            Some(Answer::Claimed(_)) => Err(mismatched()),
            None => Err(abandoned()),
        }
    }

    /// Queues `step` and waits for its answer, leading groups on `conn` while a leader's place
    /// is free and steps are waiting; `None` when the leader that took it was cancelled.
    async fn submit(
        &self,
        store: &OrderStore,
        conn: &mut PgConnection,
        step: Step,
    ) -> Option<Answer> {
        let (reply, mut answer) = oneshot::channel();
        self.lock_waiting().push_back(Waiting { step, reply });
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => return answer.ok(),
                permit = self.leaders.acquire() => {
                    let Ok(_permit) = permit else {
                        // The semaphore is never closed; wait for the answer all the same.
                        return answer.await.ok();
                    };
                    let group = self.take_group();
                    if group.is_empty() {
                        // Another leader took our step: its answer is on the way.
                        drop(_permit);
                        return answer.await.ok();
                    }
                    run_group(store, conn, group).await;
                }
            }
        }
    }

    /// The waiting steps for one group: first come first, each product once (a second step for
    /// a product waits for the next group), those whose submitter gave up dropped.
    fn take_group(&self) -> Vec<Waiting> {
        let mut waiting = self.lock_waiting();
        let mut products = HashSet::new();
        let mut group = Vec::new();
        let mut later = VecDeque::new();
        while let Some(next) = waiting.pop_front() {
            if next.reply.is_closed() {
                continue;
            }
            if group.len() >= Self::MAX_STEPS || !products.insert(next.step.product()) {
                later.push_back(next);
                continue;
            }
            group.push(next);
        }
        *waiting = later;
        group
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiting>> {
        // A panic while holding this lock leaves the queue consistent (pushes and swaps only).
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Runs `group` on `conn` and answers every submitter.
async fn run_group(store: &OrderStore, conn: &mut PgConnection, group: Vec<Waiting>) {
    let (claims, commits): (Vec<Waiting>, Vec<Waiting>) = group
        .into_iter()
        .partition(|waiting| matches!(waiting.step, Step::Claim(_)));
    let alone = claims.len() + commits.len() == 1;
    match run_together(store, conn, &claims, &commits).await {
        Ok((claimed, committed)) => {
            for (waiting, result) in claims.into_iter().zip(claimed) {
                let _ = waiting.reply.send(Answer::Claimed(result));
            }
            for (waiting, result) in commits.into_iter().zip(committed) {
                let _ = waiting.reply.send(Answer::Committed(result));
            }
        }
        Err(error) if alone => {
            if let Some(waiting) = claims.into_iter().next() {
                let _ = waiting.reply.send(Answer::Claimed(Err(error)));
            } else if let Some(waiting) = commits.into_iter().next() {
                let _ = waiting.reply.send(Answer::Committed(Err(error)));
            }
        }
        Err(error) => {
            tracing::debug!(%error, "grouped sale statement failed; running each step on its own");
            for waiting in claims.into_iter().chain(commits) {
                let answer = run_alone(store, conn, &waiting.step).await;
                let _ = waiting.reply.send(answer);
            }
        }
    }
}

/// Both kinds of step in one transaction (claims first), or one kind in one statement.
async fn run_together(
    store: &OrderStore,
    conn: &mut PgConnection,
    claims: &[Waiting],
    commits: &[Waiting],
) -> Result<
    (
        Vec<Result<i32, StoreError>>,
        Vec<Result<BatchCommit, StoreError>>,
    ),
    StoreError,
> {
    let claim_list: Vec<Claim> = claims
        .iter()
        .filter_map(|waiting| match &waiting.step {
            Step::Claim(claim) => Some(*claim),
            Step::Commit { .. } => None,
        })
        .collect();
    let batches: Vec<ProductBatch<'_>> = commits
        .iter()
        .filter_map(|waiting| match &waiting.step {
            Step::Commit {
                claim,
                decisions,
                worker,
            } => Some(ProductBatch {
                product_id: claim.product_id,
                fence: claim.fence,
                decisions,
                worker,
            }),
            Step::Claim(_) => None,
        })
        .collect();
    if batches.is_empty() {
        return Ok((
            store.claim_products_on(conn, &claim_list).await?,
            Vec::new(),
        ));
    }
    if claim_list.is_empty() {
        return Ok((
            Vec::new(),
            store.commit_fenced_batches_on(conn, &batches).await?,
        ));
    }
    let mut tx = conn.begin().await?;
    let claimed = store.claim_products_on(&mut tx, &claim_list).await?;
    let committed = store.commit_fenced_batches_on(&mut tx, &batches).await?;
    tx.commit().await?;
    Ok((claimed, committed))
}

/// One step on its own, in its own statement.
async fn run_alone(store: &OrderStore, conn: &mut PgConnection, step: &Step) -> Answer {
    match step {
        Step::Claim(claim) => Answer::Claimed(
            store
                .claim_product_on(conn, claim.product_id, claim.fence)
                .await,
        ),
        Step::Commit {
            claim,
            decisions,
            worker,
        } => Answer::Committed(
            store
                .commit_fenced_batch_on(conn, claim.product_id, decisions, claim.fence, worker)
                .await,
        ),
    }
}

/// The error a submitter gets when its group's leader was cancelled: the outcome is unknown, as
/// with a lost reply, and retrying is safe.
fn abandoned() -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(
        "the group leader running this step was cancelled",
    )))
}

/// A step answered with the other kind's answer: cannot happen (each reply is sent from the
/// step's own match arm); reported rather than trusted.
fn mismatched() -> StoreError {
    StoreError::Corrupt("a grouped sale step got another kind of answer".into())
}
