# The dashboard keeps no tables of its own; this module makes `migrate` and test flushes signal the app.
