//! The worker's end of its supervisor link, with a heartbeat.
//!
//! The supervisor counts a worker that sends nothing for a while as stuck (stopped with SIGSTOP, or wedged), kills
//! it and resumes the task from its last checkpoint. So while the agent waits on this link (for an acknowledgement,
//! a commit, or beside a tool or a model call, which the agent always races against this link's `recv`), a
//! [`WorkerToSupervisor::Heartbeat`] goes out whenever no other frame went out for the interval the supervisor gave
//! in `Start`. A worker whose runtime no longer runs sends none, which is the point.
//!
//! Cancel-safe as the agent needs: `recv` may be dropped at any await (a frame half-sent stays in the link's write
//! buffer and goes out with the next send).

use std::time::Duration;

use neuraphage_ipc::worker::{SupervisorToWorker, WorkerToSupervisor};
use neuraphage_ipc::{IpcError, Link};
use tokio::net::UnixStream;
use tokio::time::Instant;

type Inner = Link<UnixStream, SupervisorToWorker, WorkerToSupervisor>;

/// The supervisor link, sending heartbeats while it is waited on.
pub struct SupervisorLink {
    link: Inner,
    every: Duration,
    next: Instant,
    /// User messages the supervisor sent while the agent waited for something else, oldest first.
    user_messages: Vec<(u64, String)>,
}

impl SupervisorLink {
    /// Wrap an open link (after its handshake), with a heartbeat every `every` at most.
    pub fn new(link: Inner, every: Duration) -> SupervisorLink {
        let every = every.max(Duration::from_millis(50));
        SupervisorLink { link, every, next: Instant::now() + every, user_messages: Vec::new() }
    }

    /// Send one message.
    pub async fn send(&mut self, msg: &WorkerToSupervisor) -> Result<(), IpcError> {
        self.link.send(msg).await?;
        self.next = Instant::now() + self.every;
        Ok(())
    }

    /// Receive the next message (`None`: the supervisor closed the link), sending heartbeats meanwhile. A
    /// [`SupervisorToWorker::UserMessage`], which may come at any time, is kept (see [`Self::take_user_messages`])
    /// and not returned, so every place the agent waits on this link accepts it.
    pub async fn recv(&mut self) -> Result<Option<SupervisorToWorker>, IpcError> {
        loop {
            tokio::select! {
                received = self.link.recv() => match received? {
                    Some(SupervisorToWorker::UserMessage { id, text }) => self.user_messages.push((id, text)),
                    other => return Ok(other),
                },
                _ = tokio::time::sleep_until(self.next) => self.send(&WorkerToSupervisor::Heartbeat).await?,
            }
        }
    }

    /// The user messages received so far, oldest first (each once).
    pub fn take_user_messages(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.user_messages)
    }

    /// Wait for `duration` without reading the link, still sending heartbeats (the test pause, a debug build's only).
    #[cfg(debug_assertions)]
    pub async fn idle(&mut self, duration: Duration) -> Result<(), IpcError> {
        let until = Instant::now() + duration;
        while Instant::now() < until {
            tokio::time::sleep_until(self.next.min(until)).await;
            if Instant::now() >= self.next {
                self.send(&WorkerToSupervisor::Heartbeat).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neuraphage_ipc::worker::MAX_WORKER_FRAME;

    type Peer = Link<UnixStream, WorkerToSupervisor, SupervisorToWorker>;

    #[tokio::test(start_paused = true)]
    async fn a_worker_waiting_on_its_link_sends_heartbeats_and_still_gets_its_messages() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut worker = SupervisorLink::new(Link::new(a, MAX_WORKER_FRAME), Duration::from_secs(5));
        let mut supervisor: Peer = Link::new(b, MAX_WORKER_FRAME);
        let waiting = tokio::spawn(async move { (worker.recv().await, worker) });
        for _ in 0..3 {
            assert_eq!(supervisor.recv().await.unwrap(), Some(WorkerToSupervisor::Heartbeat));
        }
        supervisor.send(&SupervisorToWorker::Ack { seq: 7 }).await.unwrap();
        let (received, mut worker) = waiting.await.unwrap();
        assert_eq!(received.unwrap(), Some(SupervisorToWorker::Ack { seq: 7 }));
        // The test pause heartbeats too, and a message sent meanwhile waits for the next recv.
        supervisor.send(&SupervisorToWorker::Ack { seq: 8 }).await.unwrap();
        let idle = tokio::spawn(async move { (worker.idle(Duration::from_secs(12)).await, worker) });
        assert_eq!(supervisor.recv().await.unwrap(), Some(WorkerToSupervisor::Heartbeat));
        assert_eq!(supervisor.recv().await.unwrap(), Some(WorkerToSupervisor::Heartbeat));
        let (idled, mut worker) = idle.await.unwrap();
        idled.unwrap();
        assert_eq!(worker.recv().await.unwrap(), Some(SupervisorToWorker::Ack { seq: 8 }));
    }
}
