"""Every available language: hello world, a runtime error, stdin/args, compile errors."""

from __future__ import annotations

import pytest

from algoroom.errors import ExecutionUnavailable, UnknownLanguage
from algoroom.execution import ExecutionLimits, Executor, RunResult
from algoroom.languages import LANGUAGES

pytestmark = pytest.mark.asyncio(loop_scope="session")

HELLO = {
    "python": "print('hello, world')",
    "javascript": "console.log('hello, world')",
    "typescript": "const greeting: string = 'hello, world';\nconsole.log(greeting);",
    "c": '#include <stdio.h>\nint main(void) { puts("hello, world"); return 0; }\n',
    "cpp": '#include <iostream>\nint main() { std::cout << "hello, world" << std::endl; }\n',
    "java": 'public class Main { public static void main(String[] a) { System.out.println("hello, world"); } }\n',
    "bash": "echo 'hello, world'",
    "ruby": "puts 'hello, world'",
    "go": 'package main\nimport "fmt"\nfunc main() { fmt.Println("hello, world") }\n',
    "rust": 'fn main() { println!("hello, world"); }\n',
}

#: A runtime error and a text its error must contain.
RUNTIME_ERROR = {
    "python": ("raise ValueError('boom')", "ValueError: boom"),
    "javascript": ("throw new Error('boom')", "Error: boom"),
    "typescript": ("const f = (): never => { throw new Error('boom'); };\nf();", "Error: boom"),
    "c": ('#include <stdio.h>\nint main(void) { fprintf(stderr, "boom\\n"); return 3; }\n', "boom"),
    "cpp": ('#include <stdexcept>\nint main() { throw std::runtime_error("boom"); }\n', "boom"),
    "java": ('public class Main { public static void main(String[] a) { throw new RuntimeException("boom"); } }\n',
             "java.lang.RuntimeException: boom"),
    "bash": ("echo boom >&2; exit 3", "boom"),
    "ruby": ("raise 'boom'", "boom"),
    "go": ('package main\nfunc main() { panic("boom") }\n', "panic: boom"),
    "rust": ('fn main() { panic!("boom"); }\n', "boom"),
}

COMPILE_ERROR = {
    "c": ("int main(void) { return x; }\n", "x"),
    "cpp": ("int main() { undefined_name(); }\n", "undefined_name"),
    "java": ("public class Main { public static void main(String[] a) { int x = ; } }\n", "error"),
    "go": ("package main\nfunc main() { x := 1 }\n", "declared"),
    "rust": ("fn main() { let x: i32 = \"s\"; }\n", "mismatched types"),
    "typescript": ("const x = ;\n", "ERROR"),
}


def require(executor: Executor, language: str) -> None:
    if not executor.is_available_language(language):
        pytest.skip(f"{language} toolchain is not installed here")


@pytest.mark.parametrize("language", sorted(HELLO))
async def test_hello_world(executor: Executor, language: str) -> None:
    require(executor, language)
    result = await executor.run(language, HELLO[language])
    assert result.status == "ok", result
    assert result.success
    assert result.stdout == "hello, world\n"
    wire = result.to_dict()
    assert wire["output"] == "hello, world\n"
    assert wire["error"] is None
    assert wire["language"] == language and wire["version"]
    assert wire["exitCode"] == 0
    assert isinstance(wire["executionTime"], int)


@pytest.mark.parametrize("language", sorted(RUNTIME_ERROR))
async def test_runtime_error(executor: Executor, language: str) -> None:
    require(executor, language)
    code, expected = RUNTIME_ERROR[language]
    result = await executor.run(language, code)
    assert not result.success
    assert result.status in ("runtime_error", "killed"), result  # C++ terminate() aborts: SIGABRT
    assert expected in (result.error or ""), result


async def test_python_traceback_last_line_in_error(executor: Executor) -> None:
    result = await executor.run("python", "def f():\n    raise ValueError('boom')\nf()\n")
    assert result.status == "runtime_error"
    assert result.exit_code == 1
    assert result.error.strip().splitlines()[-1] == "ValueError: boom"


async def test_javascript_example_from_issue(executor: Executor) -> None:
    wire = (await executor.run("javascript", "console.log('hi')")).to_dict()
    assert wire["output"] == "hi\n" and wire["success"] is True


@pytest.mark.parametrize("language", sorted(COMPILE_ERROR))
async def test_compile_error(executor: Executor, language: str) -> None:
    require(executor, language)
    code, expected = COMPILE_ERROR[language]
    result = await executor.run(language, code)
    assert result.status == "compile_error", result
    assert not result.success
    assert expected in result.compile_output, result
    assert result.error == result.compile_output
    assert result.stdout == ""


async def test_stdin_and_args_python(executor: Executor) -> None:
    code = "import sys\nprint(sys.argv[1:])\nprint(sys.stdin.read().upper(), end='')"
    result = await executor.run("python", code, stdin="line one\nline two\n", args=["a b", "--c"])
    assert result.status == "ok", result
    assert result.stdout == "['a b', '--c']\nLINE ONE\nLINE TWO\n"


async def test_stdin_and_args_compiled(executor: Executor) -> None:
    require(executor, "c")
    code = (
        '#include <stdio.h>\nint main(int argc, char **argv) {\n'
        '  int a, b; scanf("%d %d", &a, &b); printf("%d %s %d\\n", a + b, argv[1], argc); return 0; }\n'
    )
    result = await executor.run("c", code, stdin="2 40", args=["x"])
    assert result.status == "ok", result
    assert result.stdout == "42 x 2\n"


async def test_empty_code_starts_nothing(executor: Executor) -> None:
    for code in ("", "   \n"):
        result = await executor.run("python", code)
        assert result.success and result.stdout == "" and result.error is None
        assert result.execution_time_ms == 0


async def test_unknown_language(executor: Executor) -> None:
    with pytest.raises(UnknownLanguage) as info:
        await executor.run("cobol", "DISPLAY 'HI'.")
    assert info.value.status == 422


async def test_aliases(executor: Executor) -> None:
    assert executor.is_available_language("py")
    result = await executor.run("js", "console.log(1)")
    assert result.language == "javascript" and result.stdout == "1\n"


async def test_languages_listing(executor: Executor) -> None:
    listing = executor.languages()
    ids = [entry["id"] for entry in listing]
    assert "python" in ids and "javascript" in ids
    for entry in listing:
        assert set(entry) == {"id", "name", "version", "aliases"}
        assert entry["id"] in LANGUAGES and entry["version"][0].isdigit()


async def test_result_wire_shape(executor: Executor) -> None:
    wire = (await executor.run("python", "print(1)")).to_dict()
    assert set(wire) == {
        "success", "output", "error", "executionTime", "status", "stdout", "stderr", "exitCode", "signal",
        "compileOutput", "cpuTimeMs", "memoryKb", "truncated", "language", "version", "warning",
    }
    assert wire["warning"] is None and wire["truncated"] is False


async def test_requested_timeout_is_clamped(executor: Executor) -> None:
    result = await executor.run("python", "import time; time.sleep(30)", timeout_ms=10_000_000)
    assert result.status == "timeout"
    assert result.error == f"Execution timed out after {executor.limits.wall_ms} ms"
    short = await executor.run("python", "import time; time.sleep(5)", timeout_ms=300)
    assert short.status == "timeout" and short.error == "Execution timed out after 300 ms"
    assert short.execution_time_ms < 1500


async def test_unavailable_executor_refuses_runs() -> None:
    ex = Executor(ExecutionLimits(max_concurrency=1), languages={})
    await ex.start()
    try:
        assert not ex.available
        assert ex.unavailable_reason and "\n" not in ex.unavailable_reason
        assert ex.languages() == []
        with pytest.raises(ExecutionUnavailable) as info:
            await ex.run("python", "print(1)")
        assert info.value.status == 503
    finally:
        await ex.close()


async def test_not_started_executor_refuses_runs() -> None:
    ex = Executor()
    with pytest.raises(ExecutionUnavailable):
        await ex.run("python", "print(1)")


@pytest.mark.asyncio(loop_scope="session")
async def test_result_success_follows_status() -> None:
    assert RunResult("ok").to_dict()["success"] is True
    assert RunResult("timeout").to_dict()["success"] is False


async def test_standard_streams_can_be_reopened(executor: Executor) -> None:
    code = "open('/dev/stdout', 'w').write('out\\n')\nopen('/dev/stderr', 'w').write('err\\n')\n" \
        "print(open('/dev/stdin').read())"
    result = await executor.run("python", code, stdin="in")
    assert result.status == "ok", result
    assert result.stdout == "out\nin\n" and result.stderr == "err\n"


async def test_large_stdin_and_source(executor: Executor) -> None:
    stdin = "x" * 1_000_000 + "\n"
    code = "import sys\ndata = sys.stdin.read()\nprint(len(data))\n" + "# padding\n" * 20_000
    result = await executor.run("python", code, stdin=stdin)
    assert result.status == "ok", result
    assert result.stdout == "1000001\n"


async def test_unusual_bytes_in_source_and_args(executor: Executor) -> None:
    code = "import sys\nprint(repr('\\\\ \\' \" $HOME `id` \\x01 é 🙂'), sys.argv[1:])\n"
    result = await executor.run("python", code, args=["$(id)", "a'b", "", "ü"])
    assert result.status == "ok", result
    assert result.stdout == repr("\\ ' \" $HOME `id` \x01 é 🙂") + " ['$(id)', \"a'b\", '', 'ü']\n"


async def test_source_with_nul_byte(executor: Executor) -> None:
    # A NUL cannot go through a pre-started sandbox's bash: such a run starts on demand.
    result = await executor.run("bash", "tail -c 2 main.sh | tr '\\0' '@'; echo\n#\x00")
    assert result.status == "ok", result
    assert result.stdout == "#@\n"
