use std::path::Path;

use super::*;

fn ctx(root: &Path) -> Context {
    let home = root.join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(home.join(".cargo")).unwrap();
    let nh = root.join("nh");
    std::fs::create_dir_all(&nh).unwrap();
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    Context { user_home: Some(home), neuraphage_home: nh, repo: Some(repo) }
}

fn refused(text: &str) -> ProfileError {
    let dir = tempfile::tempdir().unwrap();
    Profile::parse("p", "p.toml", text, &ctx(dir.path())).unwrap_err()
}

#[test]
fn every_shipped_profile_parses_and_passes_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in SHIPPED {
        let p = load(name, &ctx(dir.path())).unwrap();
        assert!(!p.description.is_empty(), "{name} has a description");
        assert!(p.file.ends_with(&format!("{name}.toml")));
    }
    let networked = load("networked", &ctx(dir.path())).unwrap();
    assert!(networked.network().hosts.iter().any(|h| h == "crates.io"));
    assert!(load("default", &ctx(dir.path())).unwrap().network().hosts.is_empty());
}

#[test]
fn a_user_profile_overrides_a_shipped_one_and_an_unknown_name_lists_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    std::fs::create_dir_all(c.neuraphage_home.join("profiles")).unwrap();
    std::fs::write(c.neuraphage_home.join("profiles/default.toml"), "description = \"mine\"\n").unwrap();
    std::fs::write(c.neuraphage_home.join("profiles/build.toml"), "description = \"build\"\n").unwrap();
    assert_eq!(load("default", &c).unwrap().description, "mine");
    let e = load("nope", &c).unwrap_err();
    assert!(e.reason.contains("no profile \"nope\"") && e.reason.contains("build, default, networked"), "{e}");
}

#[test]
fn malformed_toml_and_unknown_keys_name_the_line() {
    let e = refused("description = \"x\"\n[filesystem]\nread = [\"/usr\"\n");
    assert_eq!(e.file, "p.toml");
    assert!(e.line.is_some(), "{e}");
    let e = refused("description = \"x\"\n\n[filesystem]\nwrite = [\"/usr\"]\n");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.reason.contains("unknown field `write`"), "{e}");
    let e = refused("[limits]\nmemory-mb = \"lots\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().starts_with("p.toml:2: "), "{e}");
}

#[test]
fn rules_that_would_open_the_home_the_neuraphage_home_the_checkout_or_secrets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let nh = c.neuraphage_home.display().to_string();
    let repo = c.repo.as_ref().unwrap().display().to_string();
    let parent = dir.path().display().to_string();
    for (rule, why) in [
        ("/".to_owned(), "user's home"),
        ("{home}".to_owned(), "user's home"),
        (parent, "user's home"),
        ("{home}/.ssh".to_owned(), "credentials"),
        ("{home}/.ssh/id_ed25519".to_owned(), "credentials"),
        (nh.clone(), "Neuraphage home"),
        (format!("{nh}/tasks"), "Neuraphage home"),
        (repo.clone(), "checkout"),
        (format!("{repo}/src"), "checkout"),
        ("relative/path".to_owned(), "absolute"),
        ("/usr/../root".to_owned(), "'..'"),
        ("{worktree}/sub".to_owned(), "stand alone"),
        ("{nope}/x".to_owned(), "placeholder"),
    ] {
        let text = format!("description = \"x\"\n[filesystem]\nread = [\n  \"/usr\",\n  {rule:?},\n]\n");
        let e = Profile::parse("p", "p.toml", &text, &c).unwrap_err();
        assert_eq!(e.line, Some(5), "{rule}: {e}");
        assert!(e.reason.contains(why), "{rule}: {e}");
    }
    // A symlink that leads into the home is the home.
    std::os::unix::fs::symlink(c.user_home.as_ref().unwrap().join(".ssh"), dir.path().join("innocent")).unwrap();
    let text = format!("[filesystem]\nread = [{:?}]\n", dir.path().join("innocent").display().to_string());
    assert!(Profile::parse("p", "p.toml", &text, &c).unwrap_err().reason.contains("credentials"));
    // A harmless folder of the home is fine.
    Profile::parse("p", "p.toml", "[filesystem]\nread = [\"{home}/.cargo\"]\n", &c).unwrap();
}

#[test]
fn unknown_syscalls_bad_hosts_ports_and_env_are_refused() {
    let e = refused("[syscalls]\ndeny = [\"ptrace\",\n \"fly\"]\n");
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.reason.contains("unknown system call \"fly\""));
    assert!(refused("[syscalls]\ndeny = [\"futex\"]\n").reason.contains("needed by the worker"));
    assert!(refused("[network]\nhosts = [\"evil host\"]\n").reason.contains("not a host name"));
    assert!(refused("[network]\nhosts = [\"localhost:0\"]\n").reason.contains("not a host name or host:port"));
    assert!(refused("[network]\ntcp-connect = [0]\n").reason.contains("port 0"));
    assert!(refused("[network]\ntcp-connect = [70000]\n").line.is_some());
    let e = refused("[env]\n\"A B\" = \"x\"\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(refused("[env]\nNEURAPHAGE_HOME = \"/\"\n").reason.contains("set by Neuraphage"));
    assert!(refused("[env]\nPATH = \"/tmp\"\n").reason.contains("set by Neuraphage"));
    assert!(refused("min-landlock-abi = 42\n").reason.contains("up to"));
}

#[test]
fn a_plan_resolves_placeholders_adds_the_tasks_own_folders_and_skips_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let task = c.neuraphage_home.join("tasks/np-1");
    let folders = TaskFolders {
        workdir: task.join("worktree"),
        tmp: task.join("tmp"),
        outputs: task.join("outputs"),
        git_dir: Some(task.join("git")),
        worktree_gitfile: Some(task.join("worktree/.git")),
    };
    for d in [&folders.workdir, &folders.tmp, &folders.outputs, folders.git_dir.as_ref().unwrap()] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(folders.worktree_gitfile.as_ref().unwrap(), "note\n").unwrap();
    let text = "[filesystem]\nread-write = [\"{worktree}\", \"{task_tmp}\"]\nread-exec = [\"/usr\", \"/does/not/exist\"]\n\
                [network]\nhosts = [\"crates.io\"]\n[syscalls]\ndeny = [\"chroot\"]\n[limits]\nprocesses = 7\n";
    let plan = Profile::parse("p", "p.toml", text, &c).unwrap().plan(&folders, &c).unwrap();
    let has = |p: &Path, a: FsAccess| plan.fs.iter().any(|r| r.path == p.canonicalize().unwrap() && r.access == a);
    assert!(has(&folders.workdir, FsAccess::ReadWrite));
    assert!(has(&folders.tmp, FsAccess::ReadWrite));
    assert!(has(&folders.outputs, FsAccess::ReadWrite));
    assert!(has(folders.git_dir.as_ref().unwrap(), FsAccess::Read));
    assert!(has(folders.worktree_gitfile.as_ref().unwrap(), FsAccess::Read));
    assert!(has(Path::new("/usr"), FsAccess::ReadExec));
    assert_eq!(plan.skipped, vec!["/does/not/exist".to_owned()]);
    assert!(plan.seccomp.inet_stream_sockets, "hosts need TCP to the proxy");
    assert_eq!(plan.seccomp.extra_denied, vec!["chroot".to_owned()]);
    assert_eq!(plan.limits.processes, Some(7));
    let json = serde_json::to_string(&plan).unwrap();
    assert_eq!(serde_json::from_str::<crate::plan::SandboxPlan>(&json).unwrap(), plan);
}

#[test]
fn the_shipped_profiles_require_namespaces_and_a_profile_without_the_table_uses_them_where_it_can() {
    let dir = tempfile::tempdir().unwrap();
    let c = ctx(dir.path());
    let folders = TaskFolders {
        workdir: dir.path().to_path_buf(),
        tmp: dir.path().to_path_buf(),
        outputs: dir.path().to_path_buf(),
        git_dir: None,
        worktree_gitfile: None,
    };
    for (name, _) in SHIPPED {
        let plan = load(name, &c).unwrap().plan(&folders, &c).unwrap();
        assert!(plan.namespaces.enabled && plan.namespaces.required, "{name}: {:?}", plan.namespaces);
    }
    let plain = Profile::parse("p", "p.toml", "", &c).unwrap().plan(&folders, &c).unwrap();
    assert!(plain.namespaces.enabled && !plain.namespaces.required, "{:?}", plain.namespaces);
    let off = Profile::parse("p", "p.toml", "[namespaces]\nenabled = false\n", &c).unwrap().plan(&folders, &c).unwrap();
    assert!(!off.namespaces.enabled);
    let e = refused("[namespaces]\nenabled = false\nrequired = true\n");
    assert!(e.reason.contains("required"), "{e}");
    let e = refused("[namespaces]\nuid = 1000\n");
    assert_eq!(e.line, Some(2), "{e}");
}
