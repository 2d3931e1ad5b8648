use super::*;

#[test]
fn the_walk_counts_what_is_inside_and_never_follows_a_symlink_out() {
    let tmp = tempfile::tempdir().unwrap();
    let task = tmp.path().join("task");
    std::fs::create_dir_all(task.join("worktree/deep/er")).unwrap();
    std::fs::write(task.join("worktree/deep/er/f"), vec![1u8; 3 * MIB as usize]).unwrap();
    // Outside the task: a big file, reached by a symlink to it and a symlink to its folder.
    std::fs::create_dir(tmp.path().join("outside")).unwrap();
    std::fs::write(tmp.path().join("outside/big"), vec![1u8; 20 * MIB as usize]).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("outside/big"), task.join("link-to-file")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("outside"), task.join("link-to-dir")).unwrap();
    let got = usage(&task).unwrap();
    assert_eq!(got.cut, None);
    assert!(got.bytes >= 3 * MIB && got.bytes < 4 * MIB, "{got:?}");
    assert_eq!(got.entries, 6, "{got:?}");
    // The control: the outside is big, and counted when walked itself.
    assert!(usage(&tmp.path().join("outside")).unwrap().bytes >= 20 * MIB);
    // A task folder that is itself a symlink is refused.
    std::os::unix::fs::symlink(tmp.path().join("outside"), tmp.path().join("swapped")).unwrap();
    assert!(usage(&tmp.path().join("swapped")).is_err());
}

#[test]
fn a_reserve_is_a_percentage_or_mib_and_defaults_to_5_percent_at_most_1_gib() {
    assert_eq!(Reserve::parse("5%").unwrap(), Reserve::Percent(5.0));
    assert_eq!(Reserve::parse("512").unwrap(), Reserve::Mib(512));
    assert!(Reserve::parse("lots").unwrap_err().contains("neither a percentage"));
    assert!(Reserve::parse("90%").is_err());
    assert_eq!(Reserve::bytes(None, 100 * MIB), 5 * MIB);
    assert_eq!(Reserve::bytes(None, 1 << 40), 1 << 30);
    assert_eq!(Reserve::bytes(Some(Reserve::Mib(10)), 1 << 40), 10 * MIB);
}

#[test]
fn a_task_over_its_bound_or_under_the_reserve_is_paused_with_the_reason() {
    let used = Some(Usage { bytes: 60 * MIB, entries: 1, cut: None });
    let roomy = Some(Space { total: 1 << 40, available: 1 << 39, files: 1000, files_available: 900 });
    assert!(over(used, Some(50), roomy, MIB).unwrap().contains("over its profile's disk-mb = 50"));
    assert_eq!(over(used, Some(100), roomy, MIB), None);
    assert_eq!(over(used, None, roomy, MIB), None);
    let full = Some(Space { total: 64 * MIB, available: MIB, files: 1000, files_available: 900 });
    assert!(over(used, Some(100), full, 3 * MIB).unwrap().contains("under its reserve of 3 MiB"));
    let no_inodes = Some(Space { total: 1 << 40, available: 1 << 39, files: 1000, files_available: 10 });
    assert!(over(None, None, no_inodes, MIB).unwrap().contains("inodes"));
}

#[test]
fn the_ballast_is_made_when_there_is_room_and_freed_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let roomy = space(tmp.path()).unwrap();
    keep_ballast(tmp.path(), MIB, &roomy);
    assert_eq!(std::fs::metadata(tmp.path().join(BALLAST)).unwrap().len(), MIB);
    assert!(release_ballast(tmp.path()));
    assert!(!tmp.path().join(BALLAST).exists());
    let cramped = Space { available: MIB, ..roomy };
    keep_ballast(tmp.path(), MIB, &cramped);
    assert!(!tmp.path().join(BALLAST).exists(), "no ballast where it would fill the filesystem");
}

#[test]
fn a_walk_that_cannot_finish_counts_as_over_the_bound() {
    // A big file past the walk's depth bound.
    let tmp = tempfile::tempdir().unwrap();
    let mut deep = tmp.path().join("task");
    for _ in 0..300 {
        deep.push("d");
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("big"), vec![1u8; 2 * MIB as usize]).unwrap();
    let got = usage(&tmp.path().join("task")).unwrap();
    assert_eq!(got.cut, Some(Cut::Depth), "{got:?}");
    assert!(got.bytes < 2 * MIB, "the file was not seen: {got:?}");
    let roomy = Some(Space { total: 1 << 40, available: 1 << 39, files: 1000, files_available: 900 });
    let why = over(Some(got), Some(100), roomy, MIB).unwrap();
    assert!(why.contains("could not finish (folders deeper than 256 levels"), "{why}");
    // Without a bound of its own, the task is not paused for it.
    assert_eq!(over(Some(got), None, roomy, MIB), None);
    for cut in [Cut::Entries, Cut::Time, Cut::Unreadable] {
        let usage = Some(Usage { bytes: 0, entries: 1, cut: Some(cut) });
        assert!(over(usage, Some(100), roomy, MIB).unwrap().contains(&cut.to_string()));
    }
}
