"""One egress call, phase by phase. The file names give the order every door's call runs in:

1. ``phase1_destination``: the caller's headers the rules refuse, incident blocks on the call's
   workflow, user or execution, the route, its methods and paths, the canonical URL, the SSRF guard;
2. ``phase2_breaker``: an open breaker fails the call before anything is spent;
3. ``phase3_limits``: the endpoint's rate limits, then the budgets, each all or nothing; on an LLM
   route ``phase3_llm`` reserves tokens and cost between the two (and settles after phase 5);
4. ``phase4_credentials``: the headers that cross, the route's own with secrets from the vault;
5. ``phase5_send``: attempts (each asks the breaker), redirects (each hop guarded again), retries;
6. ``phase6_record``: the one ``EgressOutcome`` every door renders, and the metrics it counts.

Why phases in files: each phase is one security decision with its own state (guard, limiter,
budgets, vault, connection pool), and a reader looking for "where is the budget spent" finds one
file. ``egress.executor.EgressExecutor`` composes them; the doors (``egress.doors``, the
``transport`` and the ``proxy``) only build an ``EgressRequest`` and render the outcome.
"""
