//! Process identity and liveness from /proc: a pid plus its start time and the boot id
//! names one process for the life of the machine, so a reused pid is never mistaken for
//! the supervisor that wrote a state file.

/// `linux-proc:<boot_id>:<start time in clock ticks>`, the reference's format.
pub fn pid_identity(pid: i32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let start = start_time(pid)?;
    Some(format!("linux-proc:{}:{start}", boot.trim()))
}

/// Field 22 of /proc/<pid>/stat. The command name may contain spaces and parentheses,
/// so fields are counted after the last `)`.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_field(&stat, 22)?.parse().ok()
}

/// The one-letter process state (field 3): `R`, `S`, `Z`, ...
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_field(&stat, 3)?.chars().next()
}

pub fn parse_stat_field(stat: &str, field: usize) -> Option<&str> {
    let close = stat.rfind(')')?;
    // Fields after the command name start at field 3.
    stat[close + 1..]
        .split_whitespace()
        .nth(field.checked_sub(3)?)
}

/// Alive and not a zombie.
pub fn is_running(pid: i32) -> bool {
    pid > 0 && !matches!(state(pid), Some('Z' | 'X') | None)
}

/// Why a recorded supervisor no longer stands behind its state, or `None` if it does.
pub fn stale_reason(pid: Option<i64>, identity: Option<&str>) -> Option<String> {
    let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()).filter(|p| *p > 0) else {
        return Some("active looper state has no supervisor pid".into());
    };
    if !is_running(pid) {
        return Some(format!("supervisor process {pid} is no longer running"));
    }
    if let (Some(recorded), Some(current)) = (identity, pid_identity(pid))
        && recorded != current
    {
        return Some(format!("supervisor process {pid} identity changed"));
    }
    None
}

/// Every live pid whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let state = parse_stat_field(&s, 3)?.to_string();
                    let pg: i32 = parse_stat_field(&s, 5)?.parse().ok()?;
                    Some(pg == pgid && state != "Z")
                })
                .unwrap_or(false)
        })
        .collect()
}

/// The children of `pid` (zombies included: they are still its to reap). From the kernel's
/// `/proc/<pid>/task/<tid>/children` lists, else by a scan of every process's parent.
pub fn children(pid: i32) -> Vec<i32> {
    let listed = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .map(|tasks| {
            tasks
                .filter_map(|t| t.ok())
                .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
                .flat_map(|text| {
                    text.split_whitespace()
                        .filter_map(|c| c.parse::<i32>().ok())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        });
    match listed {
        // An empty list is also what a kernel without CONFIG_PROC_CHILDREN would give, but
        // then the files are missing altogether and `read_to_string` fails: see below.
        Some(v) if !v.is_empty() || children_files_exist(pid) => v,
        _ => scan_children(pid),
    }
}

fn children_files_exist(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{pid}/children")).exists()
}

fn scan_children(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| parse_stat_field(&s, 4)?.parse::<i32>().ok())
                == Some(pid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_parentheses_in_the_command_name() {
        let stat =
            "1234 (my (weird) cmd) S 1 1234 1234 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0";
        assert_eq!(parse_stat_field(stat, 3), Some("S"));
        assert_eq!(parse_stat_field(stat, 5), Some("1234"));
        assert_eq!(parse_stat_field(stat, 22), Some("987654"));
    }

    #[test]
    fn children_lists_live_and_zombie_children() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "exit 0"])
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        // Exited but not reaped yet: still a child.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let me = std::process::id() as i32;
        assert!(children(me).contains(&pid));
        assert!(scan_children(me).contains(&pid));
        let _ = child.wait();
        assert!(!children(me).contains(&pid));
    }

    #[test]
    fn own_process_is_running_with_a_stable_identity() {
        let me = std::process::id() as i32;
        assert!(is_running(me));
        let id = pid_identity(me).expect("identity on linux");
        assert!(id.starts_with("linux-proc:"));
        assert_eq!(stale_reason(Some(i64::from(me)), Some(&id)), None);
        assert_eq!(
            stale_reason(Some(i64::from(me)), Some("linux-proc:other:1")),
            Some(format!("supervisor process {me} identity changed"))
        );
        assert_eq!(
            stale_reason(None, None),
            Some("active looper state has no supervisor pid".into())
        );
    }
}
