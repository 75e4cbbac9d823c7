"""Pulsar Functions of the workbench (thin wrappers around `rtca.analytics`) and their deployment.

Pulsar imports the function classes (`rtca.functions.router.Router`, `rtca.functions.stats.TickerStatsFunction`)
inside its Python runtime; nothing here is imported eagerly, so `import rtca.functions` stays light.
"""
