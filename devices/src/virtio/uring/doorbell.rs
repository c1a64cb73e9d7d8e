//! The doorbells: the live rings' doorbell eventfds by ring id, and the
//! doorbell page on the MMIO bus that rings them (when no KVM ioeventfd
//! caught the write).

use std::sync::{Arc, RwLock};

use vmm_sys_util::eventfd::EventFd;

use crate::BusDevice;

/// The live rings' doorbell eventfds, by ring id (shared with the MMIO
/// doorbell page).
#[derive(Default)]
pub struct Doorbells(pub(super) RwLock<Vec<Option<Arc<EventFd>>>>);

impl Doorbells {
    pub(super) fn set(&self, id: u32, evt: Option<Arc<EventFd>>) {
        let mut v = self.0.write().unwrap_or_else(|e| e.into_inner());
        let i = id as usize;
        if v.len() <= i {
            v.resize(i + 1, None);
        }
        v[i] = evt;
    }

    /// Rings ring `id`'s doorbell; an unknown id is ignored.
    pub fn ring(&self, id: u32) {
        let v = self.0.read().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(evt)) = v.get(id as usize) {
            let _ = evt.write(1);
        } else {
            log::debug!("pv-uring: doorbell for unknown ring {id} ignored");
        }
    }
}

/// The doorbell page on the MMIO bus: a le32 ring id written at offset 0
/// rings that ring's doorbell (when no KVM ioeventfd caught it).
pub struct DoorbellPage(pub(super) Arc<Doorbells>);

impl BusDevice for DoorbellPage {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, <[u8; 4]>::try_from(data)) {
            (0, Ok(b)) => self.0.ring(u32::from_le_bytes(b)),
            _ => log::debug!(
                "pv-uring: {}-byte doorbell write at {offset:#x} ignored",
                data.len()
            ),
        }
    }
}
