//! The server's resident memory after start.
//!
//! Most of an idle server's resident memory is the binary's own code, not its data: the kernel
//! maps code in 64 KiB runs around every page a thread runs ("fault-around"), and starting the
//! server runs code from nearly every crate once (argument and configuration parsing,
//! migrations, the actor tree, the first route sync). That code is never run again, yet its
//! pages stay mapped, and counted, for the life of the process.
//!
//! [`release_clean_mappings`] gives those mappings back once the server has settled, and again
//! every ten minutes ([`keep_released`]): it drops this process's page-table entries for every
//! read-only private file mapping that holds no private page. Nothing is lost by it: such a
//! mapping is by definition an unmodified copy of its file, so the pages the server still runs
//! are mapped again from the page cache on their next use (a minor fault, no disk read while
//! the file stays cached), and the rest become ordinary page cache the kernel may reclaim
//! first. Writable mappings, shared mappings and any mapping with a private (copied-on-write)
//! page, such as relocated read-only data, are never touched: dropping those would lose their
//! contents.

use std::time::Duration;

/// How long after "ready" the startup pages are released: the actors' first work (recovering
/// jobs, the first route sync, the first retention sweep) runs just after the tree started.
pub const STARTUP_SETTLE: Duration = Duration::from_secs(3);

/// How often they are released again afterwards, so that the code of a rare burst of work (an
/// import, a backup, a flood of requests) does not stay mapped for the life of the process.
/// Mapping back what still runs costs a few thousand minor faults, well under a millisecond.
pub const RELEASE_EVERY: Duration = Duration::from_secs(600);

/// Releases the startup pages once the server settled, then every [`RELEASE_EVERY`]; runs for
/// the life of the server.
pub async fn keep_released() {
    tokio::time::sleep(STARTUP_SETTLE).await;
    loop {
        match tokio::task::spawn_blocking(release_clean_mappings).await {
            Ok(Ok(released)) => tracing::debug!(
                mappings = released.mappings,
                kib = released.kib,
                "released mapped code and read-only data"
            ),
            Ok(Err(e)) => tracing::debug!("could not read this process's mappings: {e}"),
            Err(e) => tracing::debug!("releasing mapped code failed: {e}"),
        }
        tokio::time::sleep(RELEASE_EVERY).await;
    }
}

/// One mapping of `/proc/self/smaps` that may be released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Releasable {
    pub start: usize,
    pub end: usize,
    /// Resident kibibytes when it was read.
    pub rss_kib: u64,
}

/// What a release did, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    pub mappings: usize,
    /// Resident kibibytes those mappings held before.
    pub kib: u64,
}

/// The mappings of an smaps text that may be released: file-backed (a path), private, not
/// writable, resident, not locked, and without a single private page.
pub fn releasable(smaps: &str) -> Vec<Releasable> {
    #[derive(Default)]
    struct Vma {
        range: Option<(usize, usize)>,
        eligible: bool,
        rss_kib: u64,
        anonymous_kib: Option<u64>,
        locked: bool,
    }
    fn finish(vma: Vma, out: &mut Vec<Releasable>) {
        if let (Some((start, end)), true, Some(0), false) =
            (vma.range, vma.eligible, vma.anonymous_kib, vma.locked)
            && vma.rss_kib > 0
        {
            out.push(Releasable {
                start,
                end,
                rss_kib: vma.rss_kib,
            });
        }
    }
    let mut out = Vec::new();
    let mut vma = Vma::default();
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            finish(std::mem::take(&mut vma), &mut out);
            vma = header;
            continue;
        }
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("Rss:"), Some(kib)) => vma.rss_kib = kib.parse().unwrap_or(0),
            (Some("Anonymous:"), Some(kib)) => vma.anonymous_kib = kib.parse().ok(),
            (Some("Locked:"), Some(kib)) => vma.locked |= kib != "0",
            (Some("VmFlags:"), _) => vma.locked |= line.split_whitespace().any(|f| f == "lo"),
            _ => {}
        }
    }
    finish(vma, &mut out);

    /// `start-end perms offset dev inode [path]`, or None for a field line.
    fn mapping_header(line: &str) -> Option<Vma> {
        let mut words = line.split_whitespace();
        let (start, end) = words.next()?.split_once('-')?;
        let range = (
            usize::from_str_radix(start, 16).ok()?,
            usize::from_str_radix(end, 16).ok()?,
        );
        let perms = words.next()?.as_bytes();
        if perms.len() != 4 {
            return None;
        }
        let path = words.nth(3);
        Some(Vma {
            range: Some(range),
            eligible: perms[0] == b'r'
                && perms[1] == b'-'
                && perms[3] == b'p'
                && path.is_some_and(|p| p.starts_with('/')),
            ..Vma::default()
        })
    }
    out
}

/// Drops this process's page-table entries for the mappings [`releasable`] picks, and gives
/// the allocator's free pages back. Linux only; elsewhere it releases nothing.
pub fn release_clean_mappings() -> std::io::Result<Released> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released::default();
    for m in releasable(&smaps) {
        // SAFETY: the range is a whole mapping of this process that is private, read-only and
        // holds no private page, so its contents are exactly its file's: MADV_DONTNEED only
        // unmaps them, and the next access maps the same bytes again from the file.
        let rc = unsafe {
            libc::madvise(
                m.start as *mut libc::c_void,
                m.end - m.start,
                libc::MADV_DONTNEED,
            )
        };
        if rc == 0 {
            released.mappings += 1;
            released.kib += m.rss_kib;
        }
    }
    // SAFETY: malloc_trim only returns free memory of the allocator's arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
560991994000-560991c3c000 r--p 00000000 fe:00 5309535                    /usr/bin/rustploy-server
Size:               2720 kB
Rss:                 944 kB
Anonymous:             0 kB
Locked:                0 kB
VmFlags: rd mr mw me sd
560991c3c000-56099247f000 r-xp 002a7000 fe:00 5309535                    /usr/bin/rustploy-server
Rss:                7408 kB
Anonymous:             0 kB
Locked:                0 kB
VmFlags: rd ex mr mw me sd
56099247f000-5609924b7000 r--p 00ae9000 fe:00 5309535                    /usr/bin/rustploy-server
Rss:                 224 kB
Anonymous:           224 kB
Locked:                0 kB
VmFlags: rd mr mw me ac sd
5609924b7000-5609924be000 rw-p 00b20000 fe:00 5309535                    /usr/bin/rustploy-server
Rss:                  28 kB
Anonymous:            28 kB
VmFlags: rd wr mr mw me ac sd
560999c19000-560999d3e000 rw-p 00000000 00:00 0                          [heap]
Rss:                1096 kB
Anonymous:          1096 kB
7ffa090c8000-7ffa090d0000 rw-s 00000000 fe:00 77                         /data/rustploy.db-shm
Rss:                  32 kB
Anonymous:             0 kB
7ffa09100000-7ffa09108000 r--s 00000000 fe:00 78                         /data/readonly-shared
Rss:                  32 kB
Anonymous:             0 kB
7ffa09d0a000-7ffa09e60000 r-xp 00026000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 920 kB
Anonymous:             0 kB
Locked:              920 kB
VmFlags: rd ex mr mw me lo
7ffa09e60000-7ffa09eb3000 r--p 0017c000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                   0 kB
Anonymous:             0 kB
7ffe01fd2000-7ffe01fd4000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
";

    #[test]
    fn only_unmodified_read_only_private_file_mappings_are_released() {
        let picked = releasable(SMAPS);
        assert_eq!(
            picked,
            vec![
                Releasable {
                    start: 0x560991994000,
                    end: 0x560991c3c000,
                    rss_kib: 944
                },
                Releasable {
                    start: 0x560991c3c000,
                    end: 0x56099247f000,
                    rss_kib: 7408
                },
            ],
            "relocated data (private pages), writable, shared, locked, empty and unnamed \
             mappings must be left alone"
        );
    }

    #[test]
    fn a_mapping_whose_private_pages_are_not_reported_is_left_alone() {
        let smaps = "\
7f0000000000-7f0000001000 r--p 00000000 fe:00 1 /usr/lib/x.so
Rss:                   4 kB
";
        assert!(releasable(smaps).is_empty());
    }

    #[test]
    fn releasing_keeps_the_process_running_and_lowers_its_mapped_code() {
        fn code_rss_kib() -> u64 {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            releasable(&smaps).iter().map(|m| m.rss_kib).sum()
        }
        let before = code_rss_kib();
        assert!(before > 0, "a running test maps some of its own code");
        let released = release_clean_mappings().unwrap();
        assert!(released.mappings > 0 && released.kib > 0, "{released:?}");
        // The code that runs from here on is mapped again on demand, and still runs.
        let words: Vec<String> = (0..1000).map(|i| format!("{i:x}")).collect();
        assert_eq!(words.join("").len(), 2728);
        assert!(
            code_rss_kib() < before,
            "released {released:?}, mapped code {before} KiB before"
        );
    }
}
