"""Choosing the detector on the user's own normal images (`fit --method auto`): a portfolio over the
three families (`portfolio`), validation folds with synthetic defects (`folds`), successive halving in
a time budget (`search`), and the detector that becomes its choice (`auto`)."""
