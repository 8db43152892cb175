//! The kernel-log XID reader on its own thread (its reads block), handing events to the
//! collection loop through a bounded channel.
//!
//! A report is turned into an event only when its PCI address is in the inventory the
//! collector keeps (GPUs seen by NVML / nvidia-smi / dcgm-exporter); reports of unknown
//! addresses (NVSwitches, GPUs not yet seen) are counted and skipped. A full channel
//! (the loop stalled) drops new reports with a counted warning rather than growing.

use super::collect::Inventory;
use gpuwarden_collect::kmsg::{KernelLogReader, ReaderPoll};
use gpuwarden_model::Event;
use std::sync::mpsc::{sync_channel, Receiver, TrySendError};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::watch;

const CHANNEL: usize = 10_000;

pub struct KernelXids {
    description: String,
    rx: Option<Receiver<Event>>,
    thread: Option<JoinHandle<()>>,
}

impl KernelXids {
    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Events read since the last call.
    pub fn drain(&self) -> Vec<Event> {
        self.rx.as_ref().map(|rx| rx.try_iter().collect()).unwrap_or_default()
    }

    /// Waits (bounded by the reader's 1 s poll) for the thread to notice shutdown.
    pub fn stop(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts reading `spec` (`auto`, `off`, or a file path).
pub fn start(spec: &str, inventory: Inventory, shutdown: watch::Receiver<bool>) -> KernelXids {
    let reader = match spec {
        "off" => {
            return KernelXids {
                description: "off".into(),
                rx: None,
                thread: None,
            }
        }
        "auto" => KernelLogReader::open_auto(None),
        path => KernelLogReader::follow_file(path, false),
    };
    let mut reader = match reader {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("kernel log ({spec}) not readable, XIDs come from NVML only: {e}");
            return KernelXids {
                description: format!("unavailable ({e})"),
                rx: None,
                thread: None,
            };
        }
    };
    let description = reader.describe();
    let (tx, rx) = sync_channel(CHANNEL);
    let thread = std::thread::Builder::new()
        .name("kernel-log".into())
        .spawn(move || {
            let mut dropped = 0u64;
            while !*shutdown.borrow() {
                match reader.poll(Duration::from_secs(1)) {
                    Ok(ReaderPoll::Xid(x)) => {
                        let inv = inventory.lock().clone();
                        let Some(event) = reader.to_event(&x, &|pci| inv.get(pci).cloned()) else {
                            tracing::debug!(code = x.code, "kernel-log report for a device not in the inventory");
                            continue;
                        };
                        match tx.try_send(event) {
                            Ok(()) => {}
                            Err(TrySendError::Full(_)) => {
                                dropped += 1;
                                tracing::warn!(dropped, "kernel-log XID dropped: collection loop is behind");
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                    Ok(ReaderPoll::Idle) => {}
                    Ok(ReaderPoll::End) => {
                        tracing::warn!("kernel log source ended; XIDs come from NVML only");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!("reading the kernel log: {e}; XIDs come from NVML only");
                        return;
                    }
                }
            }
        })
        .ok();
    KernelXids {
        description,
        rx: Some(rx),
        thread,
    }
}
