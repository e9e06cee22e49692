//! The fan-out every Redlock phase shares: one script call sent to every instance concurrently
//! under one per-instance deadline, decided as soon as a majority agreed, and each instance's
//! answer kept as an [`InstanceReport`] (never collapsed to a bool).
//!
//! - When a majority has answered so that the phase's "agreed" test holds, then [`Redlock::on_all`]
//!   returns at once and the other calls finish in the background (still bounded by the
//!   deadline): the caller waits for the quorum, not for the slowest instance.
//! - When an instance does not answer by the deadline, then its report is `TimedOut`; when it
//!   answers something the phase does not expect, then `Failed` with the reply.

use std::sync::Arc;

use futures_util::{StreamExt, stream::FuturesUnordered};
use redis::{Script, ToRedisArgs, Value};

use super::Redlock;
use crate::error::{InstanceReply, InstanceReport, LockError, Result};

/// One script call to send to every instance, with owned keys and arguments (so calls still in
/// flight when a majority has decided can finish in the background).
#[derive(Debug)]
pub(super) struct Call {
    script: &'static Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Call {
    pub(super) fn new(script: &'static Script) -> Self {
        Self {
            script,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    pub(super) fn key(mut self, key: impl ToRedisArgs) -> Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub(super) fn arg(mut self, arg: impl ToRedisArgs) -> Self {
        self.args.extend(arg.to_redis_args());
        self
    }
}

impl Redlock {
    /// Runs `call` on every instance concurrently under one per-instance deadline; results in
    /// instance order (an instance that did not answer by the deadline: a timeout error).
    ///
    /// When a majority has answered so that `agreed` holds, then this returns at once and the
    /// other calls finish in the background (still bounded by the deadline): the caller waits
    /// for the quorum, not for the slowest instance. Their replies are then reported as
    /// timeouts, which only matters to a caller that failed anyway (it waited for all).
    pub(super) async fn on_all(
        &self,
        call: Call,
        agreed: impl Fn(&Value) -> bool,
    ) -> Vec<Result<Value>> {
        let deadline = tokio::time::Instant::now() + self.inner.config.instance_timeout;
        let call = Arc::new(call);
        let mut pending: FuturesUnordered<_> = self
            .inner
            .instances
            .iter()
            .enumerate()
            .map(|(index, instance)| {
                let mut conn = instance.conn.clone();
                let call = call.clone();
                async move {
                    let mut invocation = call.script.prepare_invoke();
                    for key in &call.keys {
                        invocation.key(key.as_slice());
                    }
                    for arg in &call.args {
                        invocation.arg(arg.as_slice());
                    }
                    let reply = match invocation.invoke_async::<Value>(&mut conn).await {
                        Ok(Value::ServerError(error)) => Err(LockError::UnexpectedReply {
                            operation: "redlock script",
                            detail: format!("{error:?}"),
                        }),
                        Ok(value) => Ok(value),
                        Err(error) => Err(LockError::from(error)),
                    };
                    (index, reply)
                }
            })
            .collect();
        let mut replies: Vec<Option<Result<Value>>> =
            (0..self.inner.instances.len()).map(|_| None).collect();
        let mut agreeing = 0;
        while agreeing < self.inner.quorum {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some((index, reply))) => {
                    if reply.as_ref().is_ok_and(&agreed) {
                        agreeing += 1;
                    }
                    if let Some(slot) = replies.get_mut(index) {
                        *slot = Some(reply);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        if !pending.is_empty() && tokio::time::Instant::now() < deadline {
            // Decided by a majority: let the rest land (a grant, a release) in the background.
            tokio::spawn(async move {
                let _ = tokio::time::timeout_at(deadline, pending.collect::<Vec<_>>()).await;
            });
        }
        replies
            .into_iter()
            .map(|reply| reply.unwrap_or_else(|| Err(timed_out_error())))
            .collect()
    }

    /// Each instance's reply judged by `judge`, in instance order: `None` from `judge` means an
    /// unexpected reply (reported as `Failed`), an error is `Failed` or `TimedOut`.
    pub(super) fn reports(
        &self,
        operation: &'static str,
        replies: Vec<Result<Value>>,
        mut judge: impl FnMut(&Value) -> Option<InstanceReply>,
    ) -> Vec<InstanceReport> {
        self.inner
            .instances
            .iter()
            .zip(replies)
            .map(|(instance, reply)| {
                let reply = match reply {
                    Ok(value) => judge(&value).unwrap_or_else(|| {
                        failed(LockError::UnexpectedReply {
                            operation,
                            detail: format!("{:?}", [value]),
                        })
                    }),
                    Err(error) => failed(error),
                };
                InstanceReport {
                    instance: instance.name.clone(),
                    reply,
                }
            })
            .collect()
    }

    /// The error of a phase that `agreed` instances agreed to, short of a majority.
    pub(super) fn no_quorum(
        &self,
        operation: &'static str,
        resource: &str,
        agreed: usize,
        reports: Vec<InstanceReport>,
    ) -> LockError {
        LockError::NoQuorum {
            operation,
            resource: resource.to_owned(),
            needed: self.inner.quorum,
            agreed,
            reports,
        }
    }
}

/// How many reports answered as `which` says.
pub(super) fn count(reports: &[InstanceReport], which: impl Fn(&InstanceReply) -> bool) -> usize {
    reports.iter().filter(|report| which(&report.reply)).count()
}

/// Whether a report says the instance agreed.
pub(super) fn agreed(reply: &InstanceReply) -> bool {
    matches!(reply, InstanceReply::Agreed)
}

fn failed(error: LockError) -> InstanceReply {
    if matches!(&error, LockError::Connection(e) if e.is_timeout()) {
        InstanceReply::TimedOut
    } else {
        InstanceReply::Failed(Box::new(error))
    }
}

pub(super) fn timed_out_error() -> LockError {
    LockError::Connection(redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer within the per-instance timeout",
    )))
}
