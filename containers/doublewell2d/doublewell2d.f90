! doublewell2d -- the 2-D double well of REFERENCES.md, speaking the TAMS file protocol v1.
!
!   x_{s+1} = x_s + dt*(x_s - x_s**3) + sqrt(eps*dt)*xi1
!   y_{s+1} = y_s - 2*dt*y_s          + sqrt(eps*dt)*xi2
!
! Usage: doublewell2d request.nml     (cwd = the segment directory)
! See README.md and docs/protocol.md.

module xoshiro
  ! splitmix64-seeded xoshiro256** and Marsaglia's polar method: the same generator, bit for
  ! bit, as containers/amoc-box/amoc_box.c.  Needs -fwrapv (64-bit products wrap modulo 2**64).
  use, intrinsic :: iso_fortran_env, only: int64, real64
  implicit none
  private
  public :: rng_seed, rng_normal
  integer(int64) :: st(0:3)
  logical :: have_spare = .false.
  real(real64) :: spare = 0.0_real64
contains
  integer(int64) function splitmix64(x)
    integer(int64), intent(inout) :: x
    integer(int64) :: z
    x = x + (-7046029254386353131_int64)            ! 0x9E3779B97F4A7C15
    z = x
    z = ieor(z, ishft(z, -30)) * (-4658895280553007687_int64)   ! 0xBF58476D1CE4E5B9
    z = ieor(z, ishft(z, -27)) * (-7723592293110705685_int64)   ! 0x94D049BB133111EB
    splitmix64 = ieor(z, ishft(z, -31))
  end function

  subroutine rng_seed(seed)
    integer(int64), intent(in) :: seed
    integer(int64) :: x
    integer :: i
    x = seed
    do i = 0, 3
      st(i) = splitmix64(x)
    end do
    have_spare = .false.
  end subroutine

  integer(int64) function next_u64()
    integer(int64) :: t
    next_u64 = ishftc(st(1) * 5_int64, 7) * 9_int64
    t = ishft(st(1), 17)
    st(2) = ieor(st(2), st(0))
    st(3) = ieor(st(3), st(1))
    st(1) = ieor(st(1), st(2))
    st(0) = ieor(st(0), st(3))
    st(2) = ieor(st(2), t)
    st(3) = ishftc(st(3), 45)
  end function

  real(real64) function uniform()          ! [0, 1), 53 random bits
    uniform = real(ishft(next_u64(), -11), real64) * 2.0_real64**(-53)
  end function

  real(real64) function rng_normal()
    real(real64) :: u, v, q, f
    if (have_spare) then
      have_spare = .false.
      rng_normal = spare
      return
    end if
    do
      u = 2.0_real64 * uniform() - 1.0_real64
      v = 2.0_real64 * uniform() - 1.0_real64
      q = u * u + v * v
      if (q > 0.0_real64 .and. q < 1.0_real64) exit
    end do
    f = sqrt(-2.0_real64 * log(q) / q)
    spare = v * f
    have_spare = .true.
    rng_normal = u * f
  end function
end module xoshiro

program doublewell2d
  use, intrinsic :: iso_fortran_env, only: int64, real64, error_unit
  use xoshiro
  implicit none
  integer, parameter :: L = 4096
  ! &segment: every key of protocol v1 must be declared, or the namelist read fails
  integer :: protocol_version, checkpoint_digits, noise_dim
  integer(int64) :: step0, n_steps, checkpoint_every, seed
  real(real64) :: dt, t0
  character(len=L) :: state_in, checkpoint_prefix, checkpoint_suffix, noise_mode, noise_file, &
                      trace_file
  ! the optional parts of v1 (present only when the campaign uses them): declared all the same
  character(len=L) :: trace_format, checkpoint_file
  integer(int64) :: state_offset
  namelist /segment/ protocol_version, state_in, step0, n_steps, dt, t0, checkpoint_every, &
                     checkpoint_prefix, checkpoint_digits, checkpoint_suffix, noise_mode, &
                     noise_file, noise_dim, seed, trace_file, trace_format, checkpoint_file, &
                     state_offset
  ! &parameters: the model's own parameters, all with defaults
  real(real64) :: eps = 0.1_real64, x0 = -1.0_real64, y0 = 0.0_real64
  namelist /parameters/ eps, x0, y0

  character(len=L) :: request, msg, ckname
  character(len=32) :: ckfmt
  integer :: u, ios, tu, cu
  logical :: binary
  integer(int64) :: i, step, nbytes
  real(real64), allocatable :: noise(:, :)
  real(real64) :: x, y, xn, yn, s, xi1, xi2
  logical :: exists

  if (command_argument_count() /= 1) call die('usage: doublewell2d REQUEST.nml')
  call get_command_argument(1, request)

  ! sentinels: a key missing from the request is caught below
  protocol_version = -1; step0 = -1; n_steps = -1; dt = -1.0_real64; t0 = 0.0_real64
  checkpoint_every = -1; checkpoint_digits = -1; noise_dim = -1; seed = -1
  state_in = ''; checkpoint_prefix = 'ckpt_'; checkpoint_suffix = '.bin'
  noise_mode = ''; noise_file = ''; trace_file = ''
  trace_format = 'text'; checkpoint_file = ''; state_offset = -1

  open(newunit=u, file=trim(request), status='old', action='read', iostat=ios, iomsg=msg)
  if (ios /= 0) call die('cannot open request '//trim(request)//': '//trim(msg))
  read(u, nml=segment, iostat=ios, iomsg=msg)
  if (ios /= 0) call die('bad &segment in '//trim(request)//': '//trim(msg))
  rewind(u)
  read(u, nml=parameters, iostat=ios, iomsg=msg)
  if (ios > 0) call die('bad &parameters in '//trim(request)//': '//trim(msg))   ! absent group: defaults
  close(u)

  if (protocol_version /= 1) call die('unsupported protocol_version (this model speaks 1)')
  if (step0 < 0) call die('step0 missing or negative')
  if (n_steps < 1) call die('n_steps missing or < 1')
  if (.not. (dt > 0.0_real64)) call die('dt missing or not > 0')
  if (checkpoint_every < 1) call die('checkpoint_every missing or < 1')
  if (checkpoint_digits < 1 .or. checkpoint_digits > 30) call die('checkpoint_digits missing or not in 1..30')
  if (noise_dim /= 2) call die('noise_dim must be 2 for this model')
  if (len_trim(trace_file) == 0) call die('trace_file missing')
  if (.not. (eps >= 0.0_real64)) call die('parameter eps must be >= 0')
  binary = trim(trace_format) == 'binary'
  if (.not. binary .and. trim(trace_format) /= 'text') call die("trace_format must be 'text' or 'binary'")

  ! initial state
  if (len_trim(state_in) == 0) then
    x = x0; y = y0
  else
    inquire(file=trim(state_in), exist=exists, size=nbytes)
    if (.not. exists) call die('state_in not found: '//trim(state_in))
    if (state_offset < 0) then                   ! a file per checkpoint: exactly one state
      if (nbytes /= 16) call die('state_in is not 16 bytes (two float64): '//trim(state_in))
      state_offset = 0
    else if (mod(state_offset, 16_int64) /= 0 .or. state_offset + 16 > nbytes) then
      call die('state_offset is not a record of state_in: '//trim(state_in))
    end if
    open(newunit=u, file=trim(state_in), access='stream', form='unformatted', status='old', &
         action='read', iostat=ios, iomsg=msg)
    if (ios /= 0) call die('cannot open state_in: '//trim(msg))
    read(u, pos=state_offset + 1, iostat=ios, iomsg=msg) x, y
    if (ios /= 0) call die('cannot read state_in: '//trim(msg))
    close(u)
  end if

  ! noise
  select case (trim(noise_mode))
  case ('file')
    inquire(file=trim(noise_file), exist=exists, size=nbytes)
    if (.not. exists) call die('noise_file not found: '//trim(noise_file))
    if (nbytes /= 8_int64 * n_steps * noise_dim) call die('noise_file size is not 8*n_steps*noise_dim bytes')
    allocate(noise(noise_dim, n_steps))          ! row-major (n_steps, noise_dim) on disk
    open(newunit=u, file=trim(noise_file), access='stream', form='unformatted', status='old', &
         action='read', iostat=ios, iomsg=msg)
    if (ios /= 0) call die('cannot open noise_file: '//trim(msg))
    read(u, iostat=ios, iomsg=msg) noise
    if (ios /= 0) call die('cannot read noise_file: '//trim(msg))
    close(u)
  case ('seed')
    if (seed < 0) call die('seed missing or negative')
    call rng_seed(seed)
  case default
    call die("noise_mode must be 'file' or 'seed'")
  end select

  if (binary) then                               ! rows of float64: step, time, x, y
    open(newunit=tu, file=trim(trace_file), access='stream', form='unformatted', &
         status='replace', action='write', iostat=ios, iomsg=msg)
  else
    open(newunit=tu, file=trim(trace_file), status='replace', action='write', iostat=ios, iomsg=msg)
  end if
  if (ios /= 0) call die('cannot create trace_file: '//trim(msg))
  if (len_trim(checkpoint_file) > 0) then        ! every checkpoint of the segment in one file
    open(newunit=cu, file=trim(checkpoint_file), access='stream', form='unformatted', &
         status='replace', action='write', iostat=ios, iomsg=msg)
    if (ios /= 0) call die('cannot create checkpoint_file: '//trim(msg))
  end if

  s = sqrt(eps*dt)
  do i = 1, n_steps
    if (allocated(noise)) then
      xi1 = noise(1, i); xi2 = noise(2, i)
    else
      xi1 = rng_normal(); xi2 = rng_normal()
    end if
    xn = x + dt*(x - x*x*x) + s*xi1
    yn = y - 2.0d0*dt*y + s*xi2
    x = xn; y = yn
    step = step0 + i
    if (binary) then
      write(tu, iostat=ios, iomsg=msg) real(step, real64), real(step, real64)*dt, x, y
    else
      write(tu, '(I0,3(1X,ES24.16E3))', iostat=ios, iomsg=msg) step, real(step, real64)*dt, x, y
    end if
    if (ios /= 0) call die('cannot write trace_file: '//trim(msg))
    if ((mod(step, checkpoint_every) == 0 .or. i == n_steps) .and. len_trim(checkpoint_file) > 0) then
      write(cu, iostat=ios, iomsg=msg) x, y
      if (ios /= 0) call die('cannot write checkpoint_file: '//trim(msg))
    else if (mod(step, checkpoint_every) == 0 .or. i == n_steps) then
      ! zero-padded to checkpoint_digits, wider if the step needs more digits (like C's %0*lld)
      write(ckfmt, '(A,I0,A)') '(A,I0.', max(checkpoint_digits, ndigits(step)), ',A)'
      write(ckname, ckfmt) trim(checkpoint_prefix), step, trim(checkpoint_suffix)
      open(newunit=u, file=trim(ckname), access='stream', form='unformatted', status='replace', &
           action='write', iostat=ios, iomsg=msg)
      if (ios /= 0) call die('cannot create checkpoint '//trim(ckname)//': '//trim(msg))
      write(u, iostat=ios, iomsg=msg) x, y
      if (ios /= 0) call die('cannot write checkpoint '//trim(ckname)//': '//trim(msg))
      close(u)
    end if
  end do
  close(tu, iostat=ios, iomsg=msg)
  if (ios /= 0) call die('cannot close trace_file: '//trim(msg))
  if (len_trim(checkpoint_file) > 0) then
    close(cu, iostat=ios, iomsg=msg)
    if (ios /= 0) call die('cannot close checkpoint_file: '//trim(msg))
  end if

contains
  integer function ndigits(n)
    integer(int64), intent(in) :: n
    character(len=24) :: buf
    write(buf, '(I0)') n
    ndigits = len_trim(buf)
  end function

  subroutine die(text)
    character(len=*), intent(in) :: text
    write(error_unit, '(A)') 'doublewell2d: '//trim(text)
    error stop 1
  end subroutine
end program doublewell2d
