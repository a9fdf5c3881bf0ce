//! Quiet shutdown. Stopping a process's roles shuts their Raft groups down one after another
//! while peers and openraft's own workers still send to them; openraft logs each such message
//! as an error ("failed to send RaftMsg to RaftCore", "HeartbeatWorker … failed to send
//! HeartbeatProgress"), dozens per `larder up` or `larder bench` that ends cleanly. Once a
//! process has begun to stop (`begin`), the binary's log filter drops openraft's events: what
//! they report is the stop itself. Larder's own events still pass.

use std::sync::atomic::{AtomicBool, Ordering};

static STOPPING: AtomicBool = AtomicBool::new(false);

/// This process is stopping its roles.
pub fn begin() {
    STOPPING.store(true, Ordering::SeqCst);
}

/// Whether an event from `target` is still logged: not openraft's once the process stops.
pub fn logged(target: &str) -> bool {
    !(STOPPING.load(Ordering::Relaxed) && target.starts_with("openraft"))
}
