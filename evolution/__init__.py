"""The loop: a round of self-evolution as stages over a run directory, and the runners that chain
rounds (``evomath run``). Above the core (``evomath``) and the model builders (``training``,
``evaluation``); below the Prefect tasks and flows, which wrap these stages one for one."""
