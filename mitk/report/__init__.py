"""``mitk report``: one self-contained HTML file over a batch's records and outputs."""
