"""SUMO as a mobility backend (docs/sumo.md): the one home of libsumo, sumolib and SUMO's tools. Imports only v2x.core."""
