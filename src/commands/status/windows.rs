//! Where the listed live runs' tmux windows are: one `list-panes -a` per tmux server a
//! live run recorded, for the WINDOW cell and the `tmux_window` field.

use std::collections::HashMap;

use crate::effects::tmux;
use crate::records::fleet::Row;

/// The tmux windows of the listed runs: for each tmux server (socket) a live run recorded,
/// its panes and their windows.
#[derive(Debug, Default)]
pub struct Windows {
    servers: HashMap<String, HashMap<String, tmux::PaneWindow>>,
}

impl Windows {
    /// Ask each distinct server among the runs whose supervisor is alive, once (one
    /// `list-panes -a` each, not one call per run). A server that is gone has no windows.
    pub fn ask(rows: &[Row]) -> Windows {
        let mut servers: HashMap<String, HashMap<String, tmux::PaneWindow>> = HashMap::new();
        for r in rows.iter().filter(|r| supervisor_alive(r)) {
            if let (Some(socket), Some(_)) = (&r.state.tmux_socket, &r.state.tmux_pane)
                && !servers.contains_key(socket)
            {
                let panes = tmux::pane_windows(socket).unwrap_or_default();
                servers.insert(socket.clone(), panes);
            }
        }
        Windows { servers }
    }

    /// The window of a run whose supervisor is alive and runs in tmux.
    pub fn of(&self, r: &Row) -> Option<&tmux::PaneWindow> {
        if !supervisor_alive(r) {
            return None;
        }
        let socket = r.state.tmux_socket.as_deref()?;
        let pane = r.state.tmux_pane.as_deref()?;
        self.servers.get(socket)?.get(pane)
    }

    #[cfg(test)]
    pub fn with(socket: &str, pane: &str, w: tmux::PaneWindow) -> Windows {
        let mut me = Windows::default();
        me.servers
            .entry(socket.to_string())
            .or_default()
            .insert(pane.to_string(), w);
        me
    }
}

/// An active run whose supervisor is still there.
pub fn supervisor_alive(r: &Row) -> bool {
    r.error.is_none() && r.stale.is_none() && r.state.is_active()
}
