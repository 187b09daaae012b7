"""The sessions of the fidelity corpus: what a person types, nothing else.

The expected commands are not written here: each case runs against a real
bash, whose own history (PROMPT_COMMAND='history -a') is the ground truth,
and so are zsh's (EXTENDED_HISTORY) and fish's history files for the cases
in those shells. Only for shells that keep none (dash, busybox sh, bash
--noediting) and for program inputs does the case list what ran.
Keys are sent with a pause after each step, the way a person types, unless a
step is a paste.

Every case of the bash groups is also played with readline's markers
switched off (`_nm`, path "fallback"): the fallback path, measured on the
same categories.
"""

from __future__ import annotations

from dataclasses import dataclass

UP, DOWN, RIGHT, LEFT = b"\x1b[A", b"\x1b[B", b"\x1b[C", b"\x1b[D"
HOME, END, DELETE = b"\x1b[H", b"\x1b[F", b"\x1b[3~"
ALT_B, ALT_F = b"\x1bb", b"\x1bf"
CTRL_A, CTRL_C, CTRL_D, CTRL_E = b"\x01", b"\x03", b"\x04", b"\x05"
CTRL_H, CTRL_K, CTRL_R, CTRL_U, CTRL_W = b"\x08", b"\x0b", b"\x12", b"\x15", b"\x17"
BS, TAB, ENTER = b"\x7f", b"\t", b"\r"
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"


@dataclass(frozen=True)
class Keys:
    data: bytes
    pause_s: float = 0.25


@dataclass(frozen=True)
class Ready:
    """Wait until readline reads a line again (bash sends ESC[?2004h)."""

    count: int = 1


@dataclass(frozen=True)
class Expect:
    pattern: bytes  # a regular expression on the output


@dataclass(frozen=True)
class Resize:
    rows: int
    cols: int


@dataclass(frozen=True)
class Password:
    """Type the named secret (see Runner.secrets) and Enter, with no echo."""

    name: str


Step = Keys | Ready | Expect | Resize | Password


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    group: str
    cols: int = 80
    rows: int = 24
    rc: str = ""  # extra lines for the remote user's shell startup
    nested: bool = False  # commands run in a second user's shell too
    at_login: bytes = b""  # typed at once, before ssh has even connected
    # "markers": bash with readline's markers; "fallback": no markers;
    # "mixed": a session that changes shells.
    path: str = "markers"
    history: str = "bash"  # whose history file holds the truth: bash, zsh, fish
    expected: tuple[str, ...] | None = None  # the truth, for shells with no history
    inputs: tuple[tuple[str, str], ...] = ()  # (program, line) read by programs
    hidden: int = 0  # lines typed unseen at a shell prompt


def line(text: str | bytes) -> tuple[Step, ...]:
    """Type a whole command and wait for the next prompt."""
    data = text.encode() if isinstance(text, str) else text
    return (Keys(data + ENTER), Ready())


def at(prompt: bytes, text: str | bytes) -> tuple[Step, ...]:
    """Type a whole line and wait for `prompt` (a shell without the markers)."""
    data = text.encode() if isinstance(text, str) else text
    return (Keys(data + ENTER), Expect(prompt))


def case(name: str, group: str, *steps: Step | tuple[Step, ...], **kw: object) -> Case:
    flat: list[Step] = []
    for step in steps:
        flat.extend(step if isinstance(step, tuple) else (step,))
    return Case(name, tuple(flat), group, **kw)  # type: ignore[arg-type]


BASH_CASES: tuple[Case, ...] = (
    # -- 1. line editing --------------------------------------------------
    case(
        "edit_backspace", "editing", Keys(b"echo helo"), Keys(BS * 2), *line("lo world")
    ),
    case("edit_ctrl_h", "editing", Keys(b"echo abcX"), Keys(CTRL_H), *line("d")),
    case(
        "edit_ctrl_u",
        "editing",
        Keys(b"rm -rf /important"),
        Keys(CTRL_U),
        *line("echo safe"),
    ),
    case(
        "edit_ctrl_w",
        "editing",
        Keys(b"echo one two three"),
        Keys(CTRL_W),
        *line("four"),
    ),
    case(
        "edit_ctrl_k",
        "editing",
        Keys(b"echo keep drop"),
        Keys(LEFT * 5),
        Keys(CTRL_K),
        *line(""),
    ),
    case(
        "edit_ctrl_a_e",
        "editing",
        Keys(b"hello world"),
        Keys(CTRL_A),
        Keys(b"echo "),
        Keys(CTRL_E),
        *line("!"),
    ),
    case(
        "edit_arrows_insert",
        "editing",
        Keys(b"echo abef"),
        Keys(LEFT * 2),
        Keys(b"cd"),
        Keys(RIGHT * 2),
        *line(" gh"),
    ),
    case(
        "edit_alt_b_f",
        "editing",
        Keys(b"echo alpha gamma"),
        Keys(ALT_B),
        Keys(b"beta "),
        Keys(ALT_F),
        *line(" delta"),
    ),
    case(
        "edit_delete_key",
        "editing",
        Keys(b"echo abXcd"),
        Keys(LEFT * 3),
        Keys(DELETE),
        *line(""),
    ),
    case(
        "edit_home_end",
        "editing",
        Keys(b"ls -la"),
        Keys(HOME),
        Keys(b"time "),
        Keys(END),
        *line(" /tmp"),
    ),
    case(
        "edit_wrapped_line",
        "editing",
        Keys(b"echo " + b"a" * 90 + b" tail"),
        Keys(CTRL_A),
        Keys(ALT_F * 2),
        Keys(b" inserted"),
        Keys(END),
        Keys(BS * 4),
        *line("TAIL"),
    ),
    case(
        "edit_wrapped_backspace_across_rows",
        "editing",
        Keys(b"echo " + b"b" * 76 + b"XYZ"),
        Keys(BS * 6),
        *line("end"),
    ),
    # -- 2. completion and history ---------------------------------------
    case(
        "complete_single_tab",
        "completion",
        Keys(b"cat /etc/host"),
        Keys(b"n"),
        Keys(TAB),
        *line(""),
    ),
    case(
        "complete_double_tab_listing",
        "completion",
        Keys(b"ls /etc/pa"),
        Keys(TAB * 2, 0.5),
        Keys(b"ssw"),
        Keys(TAB),
        *line(""),
    ),
    case("complete_command_name", "completion", Keys(b"unam"), Keys(TAB), *line("-s")),
    case(
        "complete_many_listing_pager",
        "completion",
        Keys(b"ls /usr/bin/"),
        Keys(TAB * 2, 0.8),
        Keys(b"n", 0.5),
        Keys(b"whoam"),
        Keys(TAB),
        *line(""),
    ),
    case("history_up_recall", "history", *line("echo first"), Keys(UP), *line("")),
    case(
        "history_up_up_down",
        "history",
        *line("echo one"),
        *line("echo two"),
        Keys(UP),
        Keys(UP),
        Keys(DOWN),
        *line(""),
    ),
    case(
        "history_recall_then_edit",
        "history",
        *line("echo apple"),
        Keys(UP),
        Keys(BS * 5),
        *line("banana"),
    ),
    case(
        "history_ctrl_r_enter",
        "history",
        *line("echo needle"),
        *line("echo hay"),
        Keys(CTRL_R),
        Keys(b"need"),
        *line(""),
    ),
    case(
        "history_ctrl_r_arrow_edit",
        "history",
        *line("echo target"),
        *line("echo other"),
        Keys(CTRL_R),
        Keys(b"targ"),
        Keys(RIGHT),
        *line(" edited"),
    ),
    case("history_bang_bang", "history", *line("echo bang"), *line("!!")),
    case(
        "history_edit_and_execute",
        "history",
        Keys(b"echo one"),
        Keys(b"\x18\x05", 1.0),  # Ctrl-X Ctrl-E: the line in vi
        Keys(b":s/one/two/" + ENTER, 0.5),
        Keys(b":wq" + ENTER),
        Ready(),
        *line("echo after"),
        rc="EDITOR=vi",
    ),
    case(
        "history_fc",
        "history",
        *line("echo first"),
        Keys(b"fc" + ENTER, 1.0),
        Keys(b":s/first/second/" + ENTER, 0.5),
        Keys(b":wq" + ENTER),
        Ready(),
        *line("echo after"),
        rc="FCEDIT=vi",
    ),
    case("history_bang_dollar", "history", *line("echo x /tmp"), *line("ls -d !$")),
    case(
        "history_bang_number",
        "history",
        *line("echo numbered"),
        *line("echo between"),
        *line("!-2"),
    ),
    # -- 3. long lines ----------------------------------------------------
    case("long_line_80", "long", *line("echo " + "word " * 40)),
    case("long_line_200_cols", "long", *line("echo " + "wide " * 80), cols=200),
    case(
        "long_line_resize_mid_session",
        "long",
        *line("echo " + "q" * 100),
        Resize(30, 120),
        *line("echo " + "r" * 150),
    ),
    case(
        "long_line_resize_while_typing",
        "long",
        Keys(b"echo " + b"s" * 60),
        Resize(24, 40),
        Keys(b"t" * 30),
        *line(""),
    ),
    case(
        "long_line_tiny_terminal", "long", *line("echo " + "u" * 70), cols=30, rows=10
    ),
    # -- 4. multi-line ----------------------------------------------------
    case(
        "multi_backslash",
        "multiline",
        Keys(b"echo one \\" + ENTER),
        Keys(b"two \\" + ENTER),
        *line("three"),
    ),
    case(
        "multi_open_quote", "multiline", Keys(b'echo "first' + ENTER), *line('second"')
    ),
    case(
        "multi_heredoc",
        "multiline",
        Keys(b"cat <<EOF" + ENTER),
        Keys(b"alpha" + ENTER),
        Keys(b"beta" + ENTER),
        *line("EOF"),
    ),
    case(
        "multi_for_loop",
        "multiline",
        Keys(b"for i in 1 2 3" + ENTER),
        Keys(b"do" + ENTER),
        Keys(b"echo $i" + ENTER),
        *line("done"),
    ),
    case(
        "multi_if_then",
        "multiline",
        Keys(b"if true; then" + ENTER),
        Keys(b"echo yes" + ENTER),
        *line("fi"),
    ),
    case(
        "multi_function",
        "multiline",
        Keys(b"greet() {" + ENTER),
        Keys(b"echo hi" + ENTER),
        *line("}"),
        *line("greet"),
    ),
    # -- 5. pastes --------------------------------------------------------
    case(
        "paste_three_commands",
        "paste",
        Keys(b"echo p1\recho p2\recho p3\r", 1.0),
        Ready(3),
    ),
    case(
        "paste_bracketed_one_line",
        "paste",
        Keys(PASTE_START + b"echo pasted" + PASTE_END),
        *line(""),
    ),
    case(
        "paste_bracketed_multi_line",
        "paste",
        Keys(PASTE_START + b"echo b1\recho b2" + PASTE_END),
        *line(""),
    ),
    case(
        "paste_while_running",
        "paste",
        Keys(b"sleep 1" + ENTER, 0.3),
        Keys(b"echo typed-ahead" + ENTER, 2.0),
        Ready(),
    ),
    # -- 6. Ctrl-C, Ctrl-D, exit -------------------------------------------
    case(
        "ctrl_c_half_typed",
        "signals",
        Keys(b"rm -rf /half"),
        Keys(CTRL_C),
        Ready(),
        *line("echo after"),
    ),
    case(
        "ctrl_c_running_command",
        "signals",
        Keys(b"sleep 30" + ENTER, 0.5),
        Keys(CTRL_C),
        Ready(),
        *line("echo next"),
    ),
    case(
        "ctrl_c_in_continuation",
        "signals",
        Keys(b'echo "open' + ENTER),
        Keys(CTRL_C),
        Ready(),
        *line("echo closed"),
    ),
    case("ctrl_d_on_empty_line", "signals", *line("echo before-eof")),
    case("exit_command", "signals", *line("echo bye"), Keys(b"exit" + ENTER)),
    # -- 7. full-screen programs -------------------------------------------
    case(
        "fullscreen_vi",
        "fullscreen",
        Keys(b"vi /tmp/corpus-vi.txt" + ENTER, 1.0),
        Keys(b"iecho not-a-command" + ENTER + b"ls -la" + b"\x1b", 0.5),
        Keys(b":q!" + ENTER),
        Ready(),
        *line("echo after-vi"),
    ),
    case(
        "fullscreen_vi_shell_escape",
        "fullscreen",
        Keys(b"vi /tmp/corpus-TAG.txt" + ENTER, 1.0),
        Keys(b":!echo from-vi" + ENTER, 1.0),
        Keys(ENTER, 1.0),  # "Press ENTER or type command to continue"
        Keys(b":q!" + ENTER),
        Ready(),
        *line("echo after-vi"),
        inputs=(("vi /tmp/corpus-TAG.txt", ":!echo from-vi"),),
    ),
    case(
        "fullscreen_less",
        "fullscreen",
        Keys(b"less /etc/services" + ENTER, 1.0),
        Keys(b"/http" + ENTER, 0.5),
        Keys(b"q"),
        Ready(),
        *line("echo after-less"),
    ),
    case(
        "fullscreen_top",
        "fullscreen",
        Keys(b"top" + ENTER, 1.5),
        Keys(b"q"),
        Ready(),
        *line("echo after-top"),
    ),
    case(
        "fullscreen_man",
        "fullscreen",
        Keys(b"man ls" + ENTER, 2.0),
        Keys(b"q"),
        Ready(),
        *line("echo after-man"),
    ),
    case(
        "fullscreen_watch",
        "fullscreen",
        Keys(b"watch -n 0.5 date" + ENTER, 1.5),
        Keys(CTRL_C),
        Ready(),
        *line("echo after-watch"),
    ),
    # -- 8. prompts -------------------------------------------------------
    case(
        "prompt_debian_plain",
        "prompts",
        *line("echo plain"),
        rc=r"PS1='${debian_chroot:+($debian_chroot)}\u@\h:\w\$ '",
    ),
    case(
        "prompt_colored_escapes",
        "prompts",
        *line("echo colored"),
        rc=r"PS1='\[\e]0;\u@\h\a\]\[\e[1;31m\]\u\[\e[0m\]@\[\e[1;33m\]\h\[\e[0m\] \[\e[4m\]\w\[\e[0m\] \$ '",
    ),
    case(
        "prompt_two_lines",
        "prompts",
        *line("echo two-line"),
        *line("cd /tmp"),
        rc=r"PS1='[\u@\h \w]\n\$ '",
    ),
    case("prompt_root_hash", "prompts", *line("echo rooty"), rc=r"PS1='root@box:~# '"),
    case(
        "prompt_changes_with_dir",
        "prompts",
        *line("cd /usr/share"),
        *line("cd doc"),
        *line("echo where"),
        *line("cd"),
    ),
    case(
        "prompt_contains_command_text",
        "prompts",
        *line("ls -d /"),
        *line("echo ls"),
        rc=r"PS1='ls -d / $ '",
    ),
    case("prompt_empty", "prompts", *line("echo no-prompt"), rc="PS1=''"),
    # -- 9. secrets -------------------------------------------------------
    case(
        "secret_read_s",
        "secrets",
        Keys(b'read -s -p "Password: " pw' + ENTER, 0.5),
        Password("remote"),
        Ready(),
        *line("echo done"),
    ),
    case(
        "secret_getpass",
        "secrets",
        Keys(b"python3 -c 'import getpass; getpass.getpass()'" + ENTER, 1.0),
        Password("remote"),
        Ready(),
        *line("echo done"),
    ),
    case(
        "secret_su_password",
        "secrets",
        Keys(b"su - OTHER" + ENTER, 1.0),
        Password("other"),
        Ready(),
        *line("whoami"),
        Keys(CTRL_D, 1.0),
        Ready(),
        *line("echo back"),
        nested=True,
    ),
    case(
        "secret_sudo",
        "secrets",
        Keys(b"sudo -k" + ENTER),
        Ready(),
        Keys(b"sudo echo elevated" + ENTER, 1.0),
        Password("remote"),
        Ready(),
        *line("echo after-sudo"),
    ),
    case(
        "secret_passwd_wrong",
        "secrets",
        Keys(b"passwd" + ENTER, 1.0),
        Password("wrong"),
        Expect(rb"[Pp]assword"),
        Keys(CTRL_C, 0.5),
        Ready(),
        *line("echo survived"),
    ),
    case(
        "secret_nested_ssh_password",
        "secrets",
        Keys(
            b"ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            b"-o PubkeyAuthentication=no -p PORT OTHER@127.0.0.1" + ENTER,
            2.0,
        ),
        Password("other"),
        Ready(),
        *line("echo inner"),
        Keys(b"exit" + ENTER, 1.0),
        Ready(),
        *line("echo outer"),
        nested=True,
    ),
    # -- 10. UTF-8 --------------------------------------------------------
    case(
        "utf8_chinese_filename",
        "utf8",
        *line("touch /tmp/中文文件名.txt"),
        *line("ls /tmp/中文文件名.txt"),
    ),
    case("utf8_argument", "utf8", *line("echo héllo wörld ünïcode ✓")),
    case(
        "utf8_split_across_reads",
        "utf8",
        Keys("echo 汉".encode()[:-1], 0.3),
        Keys("汉".encode()[-1:] + "字".encode() + ENTER),
        Ready(),
    ),
    case("utf8_across_wrap", "utf8", *line("echo " + "a" * 60 + "宽字符" * 8)),
    case(
        "utf8_backspace_wide",
        "utf8",
        Keys("echo 中文字".encode()),
        Keys(BS),
        *line("符"),
    ),
    # -- 11. nested shells ------------------------------------------------
    case(
        "nested_bash_subshell",
        "nested",
        *line("bash"),
        *line("echo inside"),
        Keys(b"exit" + ENTER, 0.5),
        Ready(),
        *line("echo outside"),
    ),
    case(
        "nested_su_login",
        "nested",
        Keys(b"su - OTHER" + ENTER, 1.0),
        Password("other"),
        Ready(),
        *line("echo as-other"),
        *line("cd /tmp"),
        Keys(b"exit" + ENTER, 0.5),
        Ready(),
        *line("echo as-me"),
        nested=True,
    ),
    case(
        "nested_sudo_login_shell",
        "nested",
        Keys(b"sudo -k" + ENTER),
        Ready(),
        Keys(b"sudo -i -u OTHER" + ENTER, 1.0),
        Password("remote"),
        Ready(),
        *line("echo via-sudo"),
        *line("cd /tmp"),
        Keys(b"exit" + ENTER, 0.5),
        Ready(),
        *line("echo back-from-sudo"),
        nested=True,
    ),
    case(
        "nested_ssh_key",
        "nested",
        Keys(
            b"ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
            b"-i ~/.ssh/id_other -p PORT OTHER@127.0.0.1" + ENTER,
            2.0,
        ),
        Ready(),
        *line("echo remote-inner"),
        Keys(CTRL_D, 1.0),
        Ready(),
        *line("echo local-outer"),
        nested=True,
    ),
    # -- typed before the session started ----------------------------------
    case(
        "typeahead_at_login",
        "typeahead",
        Ready(),
        *line("echo second"),
        at_login=b"echo typed-at-login\r",
    ),
    case(
        "typeahead_at_login_two",
        "typeahead",
        Ready(),
        at_login=b"echo first-early\recho second-early\r",
    ),
    # -- plain, for good measure -----------------------------------------
    case(
        "plain_sequence",
        "plain",
        *line("echo a"),
        *line("pwd"),
        *line("id -u"),
        *line("true"),
        *line("date +%Y"),
    ),
    case(
        "plain_empty_lines",
        "plain",
        *line(""),
        *line("echo x"),
        *line(""),
        *line("   "),
    ),
    case("plain_spaces_and_quotes", "plain", *line("echo '  spaced  '   \"q\"  end  ")),
    case("plain_pipeline", "plain", *line("ls /etc | grep -c conf | cat")),
    case("plain_big_output", "plain", *line("seq 1 20000"), *line("echo after-output")),
    case("plain_clear_screen", "plain", *line("clear"), *line("echo after-clear")),
    case(
        "plain_ctrl_l", "plain", Keys(b"echo before"), Keys(b"\x0c"), *line(" ctrl-l")
    ),
)

D = rb"d\$ "  # the prompts the nested shells of the new cases get
B = rb"b\$ "
N = rb"n\$ "
DASH = "PS1='d$ ' dash"
# No ~/.bash_history: fish would import it into the fish case's truth.
NOEDIT = "PS1='n$ ' HISTFILE=/dev/null bash --norc --noediting"
ZSH = "ZDOTDIR=~/.corpus/zsh zsh"
FISH = "XDG_DATA_HOME=~/.corpus/fish-TAG fish"
ZWSP, RLO = "\u200b", "\u202e"
TMUX = b"tmux -f /dev/null -L corpus-TAG"
SCREEN = b"screen -c ~/.corpus/screenrc"

NEW_CASES: tuple[Case, ...] = (
    # -- 12. shells without the markers, and back --------------------------
    case(
        "shell_dash_nested",
        "shells",
        *at(D, DASH),
        *at(D, "echo in-dash"),
        Keys(b"echo ab" + BS + b"c"),
        *at(D, ""),
        Keys(b"echo p1\recho p2\recho p3\r", 1.0),
        Expect(D),
        Expect(D),
        Expect(D),
        Keys(b"echo half"),
        Keys(CTRL_C),
        Expect(D),
        Keys(b"sleep 1" + ENTER, 0.3),
        Keys(b"echo typed-ahead" + ENTER, 2.0),
        Expect(D),
        Keys(b"exit" + ENTER),
        Ready(),
        *line("echo back-in-bash"),
        path="mixed",
        expected=(
            DASH,
            "echo in-dash",
            "echo ac",
            "echo p1",
            "echo p2",
            "echo p3",
            "sleep 1",
            "echo typed-ahead",
            "exit",
            "echo back-in-bash",
        ),
    ),
    case(
        "shell_dash_hidden_keys",
        "shells",
        *at(D, DASH),
        *at(D, "stty -echo"),
        *at(D, "echo unseen"),
        *at(D, "stty echo"),
        *at(D, "echo seen"),
        Keys(b"exit" + ENTER),
        Ready(),
        path="mixed",
        expected=(DASH, "stty -echo", "echo seen", "exit"),
        hidden=2,
    ),
    case(
        "shell_busybox_sh",
        "shells",
        *at(B, "PS1='b$ ' busybox sh"),
        *at(B, "echo in-busybox"),
        Keys(b"echo abX"),
        Keys(BS),
        *at(B, "c"),
        Keys(b"exit" + ENTER),
        Ready(),
        path="mixed",
        expected=("PS1='b$ ' busybox sh", "echo in-busybox", "echo abc", "exit"),
    ),
    case(
        "shell_bash_noediting",
        "shells",
        *at(N, NOEDIT),
        *at(N, "echo no-editing"),
        Keys(b"echo abX"),
        Keys(BS),
        *at(N, "c"),
        Keys(b"exit" + ENTER),
        Ready(),
        path="mixed",
        expected=(NOEDIT, "echo no-editing", "echo abc", "exit"),
    ),
    case(
        "shell_markers_off_mid_session",
        "shells",
        *at(rb"\$ ", "bind 'set enable-bracketed-paste off'"),
        *at(rb"\$ ", "echo markers-off"),
        Keys(b"cat /etc/host"),
        Keys(b"n"),
        Keys(TAB),
        *at(rb"\$ ", ""),
        Keys(UP),
        *at(rb"\$ ", ""),
        *line("bind 'set enable-bracketed-paste on'"),
        *line("echo markers-on"),
        path="mixed",
    ),
    case(
        "shell_zsh",
        "shells",
        *line(ZSH),
        *line("echo in-zsh"),
        Keys(b"ls /etc/pa"),
        Keys(TAB * 2, 0.5),
        Keys(b"ssw"),
        Keys(TAB),
        *line(""),
        *line("printf no-newline"),
        *line("RPROMPT='[%~]'"),
        *line("echo with-rprompt"),
        Keys(b"echo half"),
        Keys(CTRL_C),
        Ready(),
        Keys(b"exit" + ENTER),
        Ready(),
        *line("echo back-from-zsh"),
        path="mixed",
        history="zsh",
    ),
    case(
        "shell_fish",
        "shells",
        *line(FISH),
        *line("echo in-fish"),
        Keys(b"ech"),
        *line(""),
        Keys(b"ec"),
        Keys(RIGHT),
        *line(""),
        Keys(b"exit" + ENTER),
        Ready(),
        *line("echo back-from-fish"),
        path="mixed",
        history="fish",
    ),
    case(
        "shell_switch_chain",
        "shells",
        *at(D, DASH),
        *at(D, "echo level-dash"),
        *line("bash"),
        *line("echo level-bash"),
        *at(D, "exit"),
        *at(D, "echo dash-again"),
        Keys(b"exit" + ENTER),
        Ready(),
        *line("echo top"),
        path="mixed",
        expected=(
            DASH,
            "echo level-dash",
            "bash",
            "echo level-bash",
            "exit",
            "echo dash-again",
            "exit",
            "echo top",
        ),
    ),
    # -- 13. program inputs ------------------------------------------------
    case(
        "input_python",
        "inputs",
        *at(rb">>> ", "python3 -q"),
        *at(rb">>> ", "import os"),
        *at(rb"\.\.\. ", "for i in range(2):"),
        *at(rb"\.\.\. ", "    print(i)"),
        *at(rb">>> ", ""),
        Keys(CTRL_D),
        Ready(),
        *line("echo after-python"),
        inputs=(
            ("python3 -q", "import os"),
            ("python3 -q", "for i in range(2):"),
            ("python3 -q", "    print(i)"),
        ),
    ),
    case(
        "input_sqlite3",
        "inputs",
        *line("sqlite3 /tmp/corpus-TAG.db"),
        *line(".tables"),
        *line("CREATE TABLE t(x);"),
        *line("DROP TABLE t;"),
        Keys(b".quit" + ENTER),
        Ready(),
        *line("rm /tmp/corpus-TAG.db"),
        inputs=(
            ("sqlite3 /tmp/corpus-TAG.db", ".tables"),
            ("sqlite3 /tmp/corpus-TAG.db", "CREATE TABLE t(x);"),
            ("sqlite3 /tmp/corpus-TAG.db", "DROP TABLE t;"),
            ("sqlite3 /tmp/corpus-TAG.db", ".quit"),
        ),
    ),
    case(
        "input_bc_and_read",
        "inputs",
        *at(rb"\r\n", "bc -q"),
        *at(rb"5\r\n", "2+3"),
        Keys(b"quit" + ENTER),
        Ready(),
        Keys(b'read -p "Name: " x' + ENTER),
        Expect(rb"Name: "),
        *line("bob"),
        *line("echo $x"),
        inputs=(("bc -q", "2+3"), ("bc -q", "quit"), ('read -p "Name: " x', "bob")),
    ),
    # -- 14. output that tries to hide or forge a command (issue 14) ------
    case(
        "failsafe_alt_screen_left_on",
        "failsafe",
        *line("printf '\\e[?1049h'"),
        *line("echo after-alt"),
        *line("printf '\\e[?1049l'"),
        *line("echo back"),
    ),
    case(
        "failsafe_unterminated_osc",
        "failsafe",
        *line("printf 'x\\e]0'"),
        *line("echo after-osc"),
        *line("printf 'y\\eP'"),
        *line("echo after-dcs"),
        # No title in the prompt: its BEL would end the string for pyte too.
        rc=r"PS1='\u@\h:\w\$ '",
    ),
    case(
        "failsafe_zero_width",
        "failsafe",
        *line(f"echo hi{ZWSP}; echo there"),
        *line(f"echo {RLO}txt.exe"),
    ),
    case(
        "failsafe_printed_prompt",
        "failsafe",
        *line("printf '\\e[?2004h$ sudo rm -rf /home/alice\\r\\n\\e[?2004l\\r'"),
        *line("echo real"),
    ),
    case(
        "failsafe_history_off",
        "failsafe",
        *line("set +H"),
        # The file's first line looks like the expansion bash would print.
        *line(
            "printf 'sed -n 1p /tmp/corpus-TAG.txt;: innocent\\n' > /tmp/corpus-TAG.txt"
        ),
        *line("sed -n 1p /tmp/corpus-TAG.txt;: !x;echo SECRET"),
        *line("rm /tmp/corpus-TAG.txt"),
    ),
    # -- 15. tmux and screen: every pane's commands ------------------------
    case(
        "mux_tmux_panes",
        "multiplexers",
        Keys(TMUX + b" new-session" + ENTER, 1.5),
        Keys(b"echo in-tmux" + ENTER, 1.0),
        Keys(b'\x02"', 1.5),  # split: a second pane below
        Keys(b"echo lower-pane" + ENTER, 1.0),
        Keys(b"\x02%", 1.5),  # split again, side by side
        Keys(b"echo right-pane" + ENTER, 1.0),
        Keys(b"\x02o", 1.0),  # to the next pane
        Keys(b"echo top-again" + ENTER, 1.0),
        Keys(b"\x02[", 1.0),  # copy mode, up, out again
        Keys(UP * 2, 0.5),
        Keys(b"q", 1.0),
        Keys(b"echo after-copy-mode" + ENTER, 1.0),
        Keys(b"\x02d", 1.0),  # detach
        Ready(),
        *line("echo detached"),
        Keys(TMUX + b" attach" + ENTER, 1.5),
        Keys(b"echo reattached" + ENTER, 1.0),
        Keys(b"\x02d", 1.0),
        Ready(),
        *line((TMUX + b" kill-server").decode()),
        path="mixed",
        expected=(
            (TMUX + b" new-session").decode(),
            "echo in-tmux",
            "echo lower-pane",
            "echo right-pane",
            "echo top-again",
            "echo after-copy-mode",
            "echo detached",
            (TMUX + b" attach").decode(),
            "echo reattached",
            (TMUX + b" kill-server").decode(),
        ),
    ),
    case(
        "mux_screen_windows",
        "multiplexers",
        Keys(SCREEN + b" -S corpus-TAG" + ENTER, 1.5),
        Keys(b"echo in-screen" + ENTER, 1.0),
        Keys(b"\x01c", 1.5),  # a second window
        Keys(b"echo window-two" + ENTER, 1.0),
        Keys(b"\x01p", 1.0),  # back to the first
        Keys(b"echo window-one" + ENTER, 1.0),
        Keys(b"\x01S", 1.0),  # split: a region below, then into it
        Keys(b"\x01\t", 1.0),
        Keys(b"\x01n", 1.0),
        Keys(b"echo lower-region" + ENTER, 1.0),
        Keys(b"\x01d", 1.0),  # detach
        Ready(),
        *line("echo detached"),
        Keys(SCREEN + b" -r corpus-TAG" + ENTER, 1.5),
        Keys(b"echo reattached" + ENTER, 1.0),
        Keys(b"\x01\\", 0.5),  # quit: all windows
        Keys(b"y", 1.0),
        Ready(),
        *line("echo gone"),
        path="mixed",
        expected=(
            (SCREEN + b" -S corpus-TAG").decode(),
            "echo in-screen",
            "echo window-two",
            "echo window-one",
            "echo lower-region",
            "echo detached",
            (SCREEN + b" -r corpus-TAG").decode(),
            "echo reattached",
            "echo gone",
        ),
    ),
    case(
        "long_paste_20k",
        "long",
        Keys(PASTE_START + b"echo start; #" + b"p" * 20_000 + PASTE_END, 1.5),
        *line(""),
        *line("echo after-long"),
    ),
)


def without_markers(case: Case) -> Case:
    """The same case with readline's markers off: the fallback path."""
    rc = (
        case.rc
        + "\nbind 'set enable-bracketed-paste off'\n"
        + "PROMPT_COMMAND='history -a; printf \"\\e]0;corpus-ready\\a\"'\n"
    )
    return Case(
        case.name + "_nm",
        case.steps,
        case.group,
        cols=case.cols,
        rows=case.rows,
        rc=rc,
        nested=case.nested,
        at_login=case.at_login,
        path="fallback",
        inputs=case.inputs,
        hidden=case.hidden,
    )


# bash runs no PROMPT_COMMAND after edit-and-execute: without the markers
# the runner could not tell the prompt is back.
MARKERS_ONLY = frozenset({"history_edit_and_execute"})
CASES: tuple[Case, ...] = (
    BASH_CASES
    + tuple(without_markers(c) for c in BASH_CASES if c.name not in MARKERS_ONLY)
    + NEW_CASES
)
