"""The tests' driver JVMs: C1 only, with a code cache that C1 does not fill in a run.

``tests/support.py`` sets them for the suite's sessions and subprocesses (docs/engine.md,
"The driver's JVM"); they only work if they reach the JVM when it starts, past the session
builder and the log4j options it adds, and with Java's default cache for C1 (48 MB) the JVM
stops compiling within half a minute. This checks the in-process session's JVM; the
subprocesses get the same string (``TEST_JVM_OPTIONS``) through ``SMALL_SPARK_ENV``.
"""

from __future__ import annotations

from pipeline_lib.io.delta import jvm

C1_ONLY = "-XX:TieredStopAtLevel=1"


def test_the_sessions_jvm_runs_c1_only_with_the_large_code_cache(spark):
    java = jvm(spark)
    management = java.java.lang.management.ManagementFactory
    assert C1_ONLY in list(management.getRuntimeMXBean().getInputArguments())
    hotspot = java.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    diagnostics = management.getPlatformMXBean(hotspot)
    assert diagnostics.getVMOption("TieredStopAtLevel").getValue() == "1"
    assert int(diagnostics.getVMOption("ReservedCodeCacheSize").getValue()) == 512 * 1024 * 1024
    # The compiler is still on: the cache did not fill (HotSpot turns compilation off when it does).
    pools = management.getMemoryPoolMXBeans()
    caches = [p for p in pools if p.getName().startswith(("CodeCache", "CodeHeap"))]
    assert caches and all(p.getUsage().getUsed() < p.getUsage().getMax() for p in caches)
    assert management.getCompilationMXBean().getTotalCompilationTime() > 0
