# The shell half of tests/suite/attacks.rs: run by the Bash tool inside a task (cwd: its worktree) and, as the control,
# outside the sandbox by the test (cwd: the same worktree, after the task ended). One line per attack.
probe() { local name=$1; shift; local out; if out=$("$@" 2>&1); then echo "$name=allowed"; else echo "$name=refused $(printf %s "$out" | tr '\n' ' ' | head -c 160)"; fi; }
probe home-ssh-key cat "$UHOME/.ssh/id_ed25519"
probe store-read head -c 16 "$NHOME/neuraphage.db"
probe api-keys-read cat "$NHOME/api-keys.yaml"
probe other-task-worktree-read cat "$VICTIM/victim.txt"
probe other-task-worktree-write sh -c 'echo overwritten-by-attacker > "$VICTIM/victim.txt"'
probe other-task-git-admin-write sh -c 'echo "ref: refs/heads/master" > "$NHOME/tasks/$VICTIM_ID/git/HEAD"'
probe user-checkout-read cat "$REPO/checkout-secret.txt"
probe user-checkout-write sh -c 'echo planted > "$REPO/planted-by-task.txt"'
probe write-system-tmp sh -c 'echo planted > "/tmp/neuraphage-attack-$TAG"'
probe write-dev-shm sh -c 'echo planted > "/dev/shm/neuraphage-attack-$TAG"'
probe write-outside-folder sh -c 'echo planted > "$ROOT/planted-by-task.txt"'
probe symlink-to-ssh-key cat link-to-ssh-key
probe symlink-to-store head -c 16 link-to-store
probe symlink-to-other-task cat link-to-other-task
probe symlink-dir-write sh -c 'echo planted > link-to-user-home/planted-through-link'
probe hardlink-to-ssh-key ln "$UHOME/.ssh/id_ed25519" hardlink-to-ssh-key
probe hardlink-to-store ln "$NHOME/neuraphage.db" "$TMPDIR/hardlink-to-store"
probe git-hooks-write sh -c 'printf "#!/bin/sh\ntouch \"$ROOT/hook-ran\"\n" > "$GITDIR/hooks/post-checkout" && chmod +x "$GITDIR/hooks/post-checkout"'
probe git-ref-master git --git-dir="$GITDIR" update-ref refs/heads/master "refs/heads/neuraphage/$VICTIM_ID"
probe git-ref-new-branch git --git-dir="$GITDIR" branch planted-by-task master
probe git-config-write git --git-dir="$GITDIR" config --file "$GITDIR/config" neuraphage.planted by-task
probe proc-environ-supervisor sh -c 'tr "\0" "\n" < "/proc/$SUPERVISOR_PID/environ" | grep -q "^ANTHROPIC_API_KEY="'
probe api-key-in-environment sh -c 'env | grep -q "^ANTHROPIC_API_KEY="'
probe chown-other-uid sh -c 'touch "$TMPDIR/chown-me" && chown 12345:12345 "$TMPDIR/chown-me"'
probe proc-keys-lists-the-key grep -q "neuraphage-attack-" /proc/keys
probe exec-gets-capabilities sh -c '! grep -q "^CapEff:[[:space:]]*0*$" /proc/self/status'
if gcc -O0 -o "$TMPDIR/attack" "$TMPDIR/attack.c" 2>"$TMPDIR/gcc.err"; then
  "$TMPDIR/attack"
  cp "$TMPDIR/attack" "$TMPDIR/attack-suid" && chmod 4755 "$TMPDIR/attack-suid" && "$TMPDIR/attack-suid" caps setuid-root-binary
else
  echo "gcc failed: $(head -c 400 "$TMPDIR/gcc.err")"
fi
echo end-of-probes
