"""What people look at: figures (DataFrame in, Figure out), widgets that wire controls to those
functions, and the headless report of the executed notebooks.

May import ``analysis``, ``render`` and the base modules; the report runner also brings up the
lab and names targets. Never ``remote`` directly, never the CLI.
"""
