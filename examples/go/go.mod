module dflockd

go 1.19
