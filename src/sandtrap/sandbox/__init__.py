"""Sandboxes: the containers attackers' shells run in, and the images they are made from."""
