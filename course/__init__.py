"""The course: what the lessons need beside the library, kept out of ``dsv3_mini`` so the model package stays reusable.

- ``course.verdict``: ``Verdict`` (what a checker returns; Jupyter shows it as ✅ / ❌ with a hint), ``check_number``,
  ``check_choice``.
- ``course.check_<lesson>``: the checkers behind each lesson's exercises (``check_tour`` for lesson 0,
  ``check_attention`` 1, ``check_moe`` 2, ``check_balancing`` 3, ``check_fp8`` 4, ``check_mtp`` 5, ``check_training``
  6, ``check_pipeline`` 7, ``check_serving`` 8, ``check_claims`` 9, ``check_long_context`` 10,
  ``check_post_training`` 11). Their names start with ``check_`` so that they
  never shadow the library's modules in a lesson (``from dsv3_mini.attention import MLA`` beside
  ``from course import check_attention``); ``check_bug_hunt`` with ``bug_hunt`` runs the bug-hunt labs.
- ``course.paths``: where the repository's shipped run and committed benchmark results live.
- ``course.bench_results``: the committed ``make bench`` run (``benchmarks/results/bench.json``), as the lessons
  quote it.

Every expected value is computed by ``dsv3_mini``; nothing here re-implements model math.
"""
