"""The through-time rules on recurrent models and tasks written for no rule: false alarms are defects.

A 2-layer GRU regressing noisy sines, a bidirectional time-major LSTM classifier, an LSTMCell loop,
a GRU on packed variable-length sequences: each trains, and none gets a finding above info.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import graddoctor


def run(name, model, batch, loss_fn, steps=60, lr=3e-3):
    opt = torch.optim.Adam(model.parameters(), lr)
    with graddoctor.watch(model, opt, every=2) as r:
        for _ in range(steps):
            x, y = batch()
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            r.log(loss=loss)
    d = graddoctor.diagnose(r)
    assert r.view().time_layers(), name
    assert not d.reaches("warning"), f"{name}: {d}"
    return d

# 1. GRU: next-value regression on noisy sines (float features, loss at every step)
class GRUReg(nn.Module):
    def __init__(s): super().__init__(); s.rnn=nn.GRU(1,64,num_layers=2,batch_first=True); s.out=nn.Linear(64,1)
    def forward(s,x): return s.out(s.rnn(x)[0])
def sines():
    t=torch.arange(51).float(); ph=torch.rand(32,1)*6.28; f=0.1+0.2*torch.rand(32,1)
    v=torch.sin(f*t+ph)+0.05*torch.randn(32,51); return v[:,:-1,None], v[:,1:,None]

# 2. LSTM (time-major, bidirectional) sequence classifier: is the sum of the last 5 inputs > 0
class BiLSTM(nn.Module):
    def __init__(s): super().__init__(); s.rnn=nn.LSTM(3,48,bidirectional=True); s.out=nn.Linear(96,2)
    def forward(s,x): return s.out(s.rnn(x)[0][-1])
def lastfive():
    x=torch.randn(40,32,3); return x, (x[-5:].sum((0,2))>0).long()

# 3. LSTMCell loop, packed-free, char-level copy with delay 3 (loss at every step)
class CellLM(nn.Module):
    def __init__(s): super().__init__(); s.emb=nn.Embedding(10,16); s.cell=nn.LSTMCell(16,64); s.out=nn.Linear(64,10)
    def forward(s,x):
        h=None; outs=[]
        for t in range(x.shape[1]):
            h=s.cell(s.emb(x[:,t]),h); outs.append(s.out(h[0]))
        return torch.stack(outs,2)
def delay():
    x=torch.randint(0,10,(32,25)); y=torch.roll(x,3,1); y[:,:3]=0; return x,y

# 4. GRU on packed variable-length sequences, classify the mean sign
class Packed(nn.Module):
    def __init__(s): super().__init__(); s.rnn=nn.GRU(2,32,batch_first=True); s.out=nn.Linear(32,2)
    def forward(s,x):
        xs,lengths=x
        p=nn.utils.rnn.pack_padded_sequence(xs,lengths,batch_first=True,enforce_sorted=False)
        _,h=s.rnn(p); return s.out(h[-1])
def packed():
    L=torch.randint(5,30,(32,)); xs=torch.randn(32,30,2)
    m=torch.arange(30)[None]<L[:,None]; xs=xs*m[...,None]
    y=((xs[:,:,0].sum(1))>0).long(); return (xs,L),y


@pytest.mark.slow
def test_no_false_alarm_on_recurrent_models_outside_the_suite():
    torch.manual_seed(0)
    run("GRU 2-layer sine regression", GRUReg(), sines, F.mse_loss)
    run("BiLSTM last-5 classifier T=40", BiLSTM(), lastfive, F.cross_entropy, steps=100)
    run("LSTMCell loop delay-3 copy", CellLM(), delay, F.cross_entropy, steps=80)
    run("GRU packed mean-sign", Packed(), packed, F.cross_entropy, steps=80)
