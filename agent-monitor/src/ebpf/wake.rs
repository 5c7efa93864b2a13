//! Which event kinds wake the daemon's ring-buffer reader at once: the `WAKE_KINDS` map the
//! kernel programs consult when they submit an event (see `agent-monitor-ebpf/src/emit.rs`).
//! The daemon writes it from its loaded rules at start and after each rule reload.

use agent_monitor_common::{WAKE_KINDS_LEN, WAKE_NOW};
use aya::maps::{Array, MapData, MapError};

pub struct WakeKinds {
    map: Array<MapData, u32>,
    /// What the map holds now, so an unchanged reload writes nothing.
    current: Vec<u16>,
}

impl WakeKinds {
    pub fn new(map: Array<MapData, u32>) -> Self {
        Self {
            map,
            current: Vec::new(),
        }
    }

    /// Events of `kinds` wake the reader at once from now on; every other kind is batched.
    /// Kinds are written before others are cleared, so no urgent kind ever lapses in between.
    pub fn set(&mut self, kinds: &[u16]) -> Result<(), MapError> {
        let mut kinds: Vec<u16> = kinds
            .iter()
            .copied()
            .filter(|k| u32::from(*k) < WAKE_KINDS_LEN)
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        if kinds == self.current {
            return Ok(());
        }
        for k in &kinds {
            self.map.set(u32::from(*k), WAKE_NOW, 0)?;
        }
        for k in self.current.iter().filter(|k| !kinds.contains(k)) {
            self.map.set(u32::from(*k), 0, 0)?;
        }
        self.current = kinds;
        Ok(())
    }

    /// The kinds that wake the reader at once, as the kernel map holds them.
    pub fn read(&self) -> Result<Vec<u16>, MapError> {
        let mut out = Vec::new();
        for k in 0..WAKE_KINDS_LEN {
            if self.map.get(&k, 0)? == WAKE_NOW {
                out.push(k as u16);
            }
        }
        Ok(out)
    }
}
