//! Skills: folders holding a `SKILL.md` (YAML front matter `name` and `description`, then the body), from the
//! repository's `.neuraphage/skills/` (read here, inside the sandbox) and the user's `$NEURAPHAGE_HOME/skills/`
//! (read by the supervisor, given raw in `WorkerStart::home_skills`). Both are parsed by [`parse`]; the system
//! prompt lists each skill's name and description and the `Skill` tool returns its body.
//!
//! Bounds: at most [`MAX_SKILLS`] skills, each file at most [`MAX_SKILL_BYTES`], a name of at most 64 characters of
//! `[a-z0-9-_]`. The user's skill wins a name clash with the repository's. A malformed file is skipped with a reason
//! (the agent reports it as a `skill_skipped` notice).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use neuraphage_ipc::worker::SkillFile;
use serde::Deserialize;

use crate::context::clean;

/// Most skills listed (the user's first, then the repository's, each by name).
pub const MAX_SKILLS: usize = 64;
/// Largest `SKILL.md` read.
pub const MAX_SKILL_BYTES: usize = 64 * 1024;
/// Longest skill name.
pub const MAX_NAME: usize = 64;
/// Longest description shown in the prompt, in characters (longer ones are cut).
pub const MAX_DESCRIPTION: usize = 1024;
/// Where a repository keeps its skills.
pub const REPO_SKILLS_DIR: &str = ".neuraphage/skills";
/// Largest front matter (the YAML between the `---` lines), in bytes. YAML aliases replay their anchor, so a small
/// file can stand for a huge tree (a "billion laughs"): the front matter is capped, and its fields are read without
/// building a tree ([`Field`]), so what a skill can cost to parse stays small.
pub const MAX_FRONT_MATTER: usize = 8 * 1024;

/// One usable skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    /// Its name (`[a-z0-9-_]`, at most 64).
    pub name: String,
    /// Its description, one line, escaped and capped.
    pub description: String,
    /// Its instructions (the file after the front matter).
    pub body: String,
    /// Where it came from, for messages.
    pub path: String,
}

/// A skill that was not taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The file.
    pub path: String,
    /// Why.
    pub why: String,
}

/// The task's skills by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skills {
    by_name: BTreeMap<String, Skill>,
}

#[derive(Deserialize)]
struct FrontMatter {
    name: Option<Field>,
    description: Option<Field>,
}

/// A front matter field: a string, or anything else — skipped as it is read, never kept (an alias to a large
/// anchor costs no memory).
enum Field {
    Text(String),
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Field;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Field, E> {
                Ok(Field::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Field, E> {
                Ok(Field::Text(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_unit<E>(self) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_none<E>(self) -> Result<Field, E> {
                Ok(Field::Other)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
                d.deserialize_any(Visit)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Field::Other)
            }
            fn visit_enum<A: serde::de::EnumAccess<'de>>(self, e: A) -> Result<Field, A::Error> {
                use serde::de::VariantAccess;
                let (serde::de::IgnoredAny, v) = e.variant()?;
                v.newtype_variant::<serde::de::IgnoredAny>()?;
                Ok(Field::Other)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// Parse one `SKILL.md`.
pub fn parse(path: &str, text: &str) -> Result<Skill, String> {
    if text.len() > MAX_SKILL_BYTES {
        return Err(format!("larger than {MAX_SKILL_BYTES} bytes"));
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
        .ok_or("no YAML front matter (the file must start with a `---` line)")?;
    let (yaml, body) = split_front_matter(rest).ok_or("the front matter has no closing `---` line")?;
    if yaml.len() > MAX_FRONT_MATTER {
        return Err(format!("the front matter is larger than {MAX_FRONT_MATTER} bytes"));
    }
    let front: FrontMatter = serde_yaml_ng::from_str(yaml).map_err(|e| format!("front matter: {e}"))?;
    let name = match front.name {
        Some(Field::Text(name)) => name,
        Some(Field::Other) => return Err("`name` must be a string".into()),
        None => return Err("the front matter has no `name`".into()),
    };
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "`name` must be 1 to {MAX_NAME} characters of a-z, 0-9, - and _, got `{}`",
            clean(&name, 80)
        ));
    }
    let description = match front.description {
        Some(Field::Text(d)) if !d.trim().is_empty() => d,
        Some(Field::Text(_)) | None => return Err("the front matter has no `description`".into()),
        Some(Field::Other) => return Err("`description` must be a string".into()),
    };
    // One line in the system prompt's skills list: it cannot open a frame that poses as the user's instructions.
    let description = clean(description.split_whitespace().collect::<Vec<_>>().join(" ").as_str(), MAX_DESCRIPTION);
    let description = crate::context::defuse_frames(&description);
    Ok(Skill { name, description, body: body.trim_start_matches(['\r', '\n']).to_owned(), path: path.to_owned() })
}

/// The front matter's YAML and the body after its closing `---` line.
fn split_front_matter(rest: &str) -> Option<(&str, &str)> {
    let mut at = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end_matches(['\r', '\n']) == "---" {
            return Some((&rest[..at], &rest[at + line.len()..]));
        }
        at += line.len();
    }
    None
}

impl Skills {
    /// The user's skills (they win a clash) and the repository's, each parsed; the malformed and the ones past the
    /// caps are returned as skipped.
    pub fn gather(home: &[SkillFile], repo: &[SkillFile]) -> (Skills, Vec<Skipped>) {
        let mut skills = Skills::default();
        let mut skipped = Vec::new();
        for file in home.iter().chain(repo) {
            match parse(&file.path, &file.text) {
                Err(why) => skipped.push(Skipped { path: file.path.clone(), why }),
                Ok(skill) if skills.by_name.contains_key(&skill.name) => {
                    let kept = &skills.by_name[&skill.name].path;
                    let why = format!("a skill named `{}` is already taken from {kept}", skill.name);
                    skipped.push(Skipped { path: file.path.clone(), why });
                }
                Ok(_) if skills.by_name.len() >= MAX_SKILLS => {
                    skipped.push(Skipped { path: file.path.clone(), why: format!("more than {MAX_SKILLS} skills") });
                }
                Ok(skill) => {
                    skills.by_name.insert(skill.name.clone(), skill);
                }
            }
        }
        (skills, skipped)
    }

    /// A skill by name.
    pub fn get(&self, name: &str) -> Option<&Skill> {
        self.by_name.get(name)
    }

    /// Every skill, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Skill> {
        self.by_name.values()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The repository's `SKILL.md` files under `workdir/.neuraphage/skills/*/`, read bounded (no symlink followed, at
/// most [`MAX_SKILL_BYTES`] + 1 bytes each, at most 4 × [`MAX_SKILLS`] folders looked at, in name order). A file that
/// cannot be read is returned as skipped.
pub fn read_repo_skills(workdir: &Path) -> (Vec<SkillFile>, Vec<Skipped>) {
    let dir = workdir.join(REPO_SKILLS_DIR);
    let mut files = Vec::new();
    let mut skipped = Vec::new();
    // `.neuraphage` and `skills` must be real folders of the worktree, not symlinks out of it.
    let real = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real(&workdir.join(".neuraphage")) || !real(&dir) {
        return (files, skipped);
    }
    let Ok(entries) = std::fs::read_dir(&dir) else { return (files, skipped) };
    let mut names: Vec<std::ffi::OsString> = entries.flatten().take(4 * MAX_SKILLS).map(|e| e.file_name()).collect();
    names.sort();
    for name in names {
        let folder = dir.join(&name);
        // The folder itself must not be a symlink (out of the repository).
        match std::fs::symlink_metadata(&folder) {
            Ok(m) if m.is_dir() => {}
            _ => continue,
        }
        let shown = format!("{REPO_SKILLS_DIR}/{}/SKILL.md", clean(&name.to_string_lossy(), 80));
        match read_bounded(&folder.join("SKILL.md"), MAX_SKILL_BYTES) {
            Ok(None) => {}
            Ok(Some((text, false))) => files.push(SkillFile { path: shown, text }),
            Ok(Some((_, true))) => {
                skipped.push(Skipped { path: shown, why: format!("larger than {MAX_SKILL_BYTES} bytes") })
            }
            Err(why) => skipped.push(Skipped { path: shown, why }),
        }
    }
    (files, skipped)
}

/// Read a regular file without following a symlink at its last component, at most `cap` bytes: its text (lossy
/// UTF-8) and whether it was longer. `Ok(None)`: no such file.
pub fn read_bounded(path: &Path, cap: usize) -> Result<Option<(String, bool)>, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => return Err("a symlink (not followed)".into()),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::with_capacity(cap.min(meta.len() as usize) + 1);
    file.take(cap as u64 + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    let longer = bytes.len() > cap;
    bytes.truncate(cap);
    Ok(Some((String::from_utf8_lossy(&bytes).into_owned(), longer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, text: &str) -> SkillFile {
        SkillFile { path: path.into(), text: text.into() }
    }

    #[test]
    fn a_skill_has_a_name_a_description_and_a_body() {
        let s = parse("p", "---\nname: deploy\ndescription: How to deploy\n  the service\n---\nStep 1.\n").unwrap();
        assert_eq!(
            (s.name.as_str(), s.description.as_str(), s.body.as_str()),
            ("deploy", "How to deploy the service", "Step 1.\n")
        );
    }

    #[test]
    fn malformed_front_matter_is_refused_with_a_reason() {
        assert!(parse("p", "name: x\n").unwrap_err().contains("front matter"));
        assert!(parse("p", "---\nname: x\n").unwrap_err().contains("closing"));
        assert!(parse("p", "---\nname: [x\n---\n").unwrap_err().contains("front matter"));
        assert!(parse("p", "---\ndescription: d\n---\n").unwrap_err().contains("no `name`"));
        assert!(parse("p", "---\nname: Bad Name\ndescription: d\n---\n").unwrap_err().contains("a-z"));
        assert!(parse("p", &format!("---\nname: {}\ndescription: d\n---\n", "a".repeat(65))).is_err());
        assert!(parse("p", "---\nname: x\n---\n").unwrap_err().contains("description"));
        assert!(parse("p", &"x".repeat(MAX_SKILL_BYTES + 1)).unwrap_err().contains("larger"));
    }

    #[test]
    fn descriptions_are_escaped_and_capped() {
        let s = parse("p", "---\nname: x\ndescription: \"a\\e[31mb\\u202e\"\n---\n").unwrap();
        assert!(!s.description.contains('\u{1b}') && !s.description.contains('\u{202e}'), "{}", s.description);
        let long = format!("---\nname: x\ndescription: {}\n---\n", "d".repeat(5000));
        assert!(parse("p", &long).unwrap().description.chars().count() <= MAX_DESCRIPTION + 20);
    }

    #[test]
    fn the_user_wins_a_clash_and_the_count_is_capped() {
        let home = [file("home/a", "---\nname: a\ndescription: mine\n---\nM")];
        let mut repo = vec![file("repo/a", "---\nname: a\ndescription: theirs\n---\nT"), file("repo/bad", "x")];
        for i in 0..70 {
            repo.push(file(&format!("repo/{i}"), &format!("---\nname: s{i}\ndescription: d\n---\n")));
        }
        let (skills, skipped) = Skills::gather(&home, &repo);
        assert_eq!(skills.get("a").unwrap().body, "M");
        assert_eq!(skills.iter().count(), MAX_SKILLS);
        assert!(skipped.iter().any(|s| s.path == "repo/a" && s.why.contains("already")));
        assert!(skipped.iter().any(|s| s.path == "repo/bad"));
        assert!(skipped.iter().any(|s| s.why.contains("more than")));
    }

    /// A front matter of `aliases` aliases to one anchor of `items` scalars, under `key`.
    fn alias_bomb(key: &str, items: usize, aliases: usize) -> String {
        let mut y = format!("---\nname: ok\ndescription: d\nbig: &b [{}x]\n{key}: [", "x,".repeat(items));
        y.push_str(&"*b,".repeat(aliases));
        y.push_str("*b]\n---\nbody\n");
        y
    }

    fn peak_rss_kib() -> i64 {
        nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map(|u| u.max_rss()).unwrap_or(0)
    }

    #[test]
    fn attack_a_yaml_alias_bomb_costs_no_memory() {
        // Control: under the front matter cap, so it is parsed; before the fix each alias built its anchor's
        // 1,800 values again (2.3 M values, hundreds of MB).
        let inside = alias_bomb("other", 1800, 1300);
        assert!(inside.len() < MAX_FRONT_MATTER + 60, "{}", inside.len());
        let before = peak_rss_kib();
        let skill = parse("p", &inside.replacen("name: ok\n", "", 1).replacen("other:", "name:", 1));
        assert!(skill.unwrap_err().contains("must be a string"));
        assert_eq!(parse("p", &inside).unwrap().name, "ok");
        let grown_mib = (peak_rss_kib() - before) / 1024;
        assert!(grown_mib < 64, "parsing an alias bomb grew the peak RSS by {grown_mib} MiB");
        // Billion laughs: nested anchors.
        let mut nested = String::from("---\nname: ok\ndescription: d\na0: &a0 [x,x,x,x,x,x,x,x,x,x]\n");
        for i in 1..10 {
            nested.push_str(&format!("a{i}: &a{i} [{}]\n", vec![format!("*a{}", i - 1); 10].join(",")));
        }
        assert!(parse("p", &nested).is_err());
        // A 60 KB file (under the file cap) whose front matter is over its own cap is refused by its size.
        let big = alias_bomb("name", 5000, 15000);
        assert!(big.len() < MAX_SKILL_BYTES);
        assert!(parse("p", &big).unwrap_err().contains("front matter is larger"));
        // A plain front matter with other keys still parses.
        let s = parse("p", "---\nname: ok\ndescription: d\nlicense: MIT\ntags: [a, b]\nmeta: {x: 1}\n---\nB").unwrap();
        assert_eq!((s.name.as_str(), s.body.as_str()), ("ok", "B"));
    }

    #[test]
    fn repository_skills_are_read_bounded_and_symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let skills = dir.path().join(REPO_SKILLS_DIR);
        std::fs::create_dir_all(skills.join("ok")).unwrap();
        std::fs::write(skills.join("ok/SKILL.md"), "---\nname: ok\ndescription: d\n---\nbody").unwrap();
        std::fs::create_dir_all(skills.join("big")).unwrap();
        std::fs::write(skills.join("big/SKILL.md"), vec![b'x'; MAX_SKILL_BYTES + 10]).unwrap();
        std::fs::create_dir_all(skills.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", skills.join("link/SKILL.md")).unwrap();
        let (files, skipped) = read_repo_skills(dir.path());
        assert_eq!(files.len(), 1);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
    }
}
