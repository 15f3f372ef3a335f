"""Runs a notebook headless (nbclient, the kernel of this interpreter) and prints what
each code cell printed, its stream output and text results, in order; exits non-zero,
naming the cell, if one raised.

    notebook.py NOTEBOOK
"""
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

nb = nbformat.read(sys.argv[1], as_version=4)
try:
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
except CellExecutionError as e:
    sys.exit(f"a cell failed: {e}")
for cell in nb.cells:
    if cell.cell_type != "code":
        continue
    for out in cell.outputs:
        if out.output_type == "stream":
            sys.stdout.write(out.text)
        elif out.output_type == "execute_result":
            print(out.data.get("text/plain", ""))
